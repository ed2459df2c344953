//! The collector end to end: the real `procyon serve` on a free port with a temp data
//! directory, real HTTP and WebSocket clients, real child processes to act on.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::collector::{Collector, SEED_EXAMPLE, cli, new_key, new_user};
use common::{Sleeper, marker, state, wait_for};
use futures_util::StreamExt;
use serde_json::{Value, json};

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text message of `ws` as JSON, within ten seconds.
async fn next(ws: &mut Ws) -> Value {
    let msg =
        tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a message in time").unwrap().unwrap();
    serde_json::from_str(msg.to_text().unwrap()).unwrap()
}

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// A full snapshot of this machine reported as `hostname`, with `seq`.
fn full_snapshot(hostname: &str, seq: u64) -> Value {
    let mut snap = procyon::sample::Sampler::new(Default::default()).sample();
    snap.host.hostname = hostname.into();
    snap.seq = seq;
    serde_json::to_value(snap).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_api_works_unchanged() {
    let dir = temp();
    let c = Collector::start(dir.path(), &["--no-local"]);
    let key = new_key(dir.path(), "machine-01", None);
    let token = c.admin_token().await;

    // The document's example upload, verbatim.
    let (status, body) = c.upload(&key, SEED_EXAMPLE).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["message"], "Snapshot uploaded successfully.");
    let id = body["snapshot_id"].as_i64().unwrap();
    // The same upload again is stored once.
    let (status, body) = c.upload(&key, SEED_EXAMPLE).await;
    assert_eq!((status, body["duplicate"].as_bool()), (200, Some(true)));
    assert_eq!(c.stored_count(&token).await, 1);

    let (status, hosts) = c.get("/api/hosts/", &token).await;
    assert_eq!(status, 200);
    assert_eq!(hosts[0]["hostname"], "MACHINE-01");
    assert_eq!(hosts[0]["info"], Value::Null, "the short format carries no host facts");

    let (_, latest) = c.get("/api/process-snapshots/latest/?hostname=MACHINE-01", &token).await;
    assert_eq!(latest["hostname"], "MACHINE-01");
    assert_eq!(latest["snapshot_time"], "2025-08-22T09:15:00Z");
    let procs = latest["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 2);
    assert_eq!(procs[1]["parent_pid"], 100);
    assert_eq!(procs[0]["memory"], 150 * 1024 * 1024);
    let (_, all) = c.get("/api/process-snapshots/latest/", &token).await;
    assert_eq!(all.as_array().unwrap().len(), 1);

    let (_, list) = c.get("/api/process-snapshots/list/?hostname=MACHINE-01", &token).await;
    assert_eq!(list[0]["snapshot_id"], id);
    assert_eq!(list[0]["hostname"], "MACHINE-01");
    assert_eq!(list[0]["timestamp"], "2025-08-22T09:15:00Z");

    let (_, tree) = c.get(&format!("/api/process-snapshots/{id}/?tree=true"), &token).await;
    assert_eq!(tree["snapshot_id"], id);
    assert_eq!(tree["processes"][0]["name"], "explorer.exe");
    assert_eq!(tree["processes"][0]["children"][0]["name"], "notepad.exe");

    for query in ["limit=10", "limt=10"] {
        let (status, series) =
            c.get(&format!("/api/process-snapshots/series/?hostname=MACHINE-01&{query}"), &token).await;
        assert_eq!(status, 200, "{series}");
        assert_eq!(series["points"].as_array().unwrap().len(), 1);
    }
    let (status, _) = c.get("/api/process-snapshots/series/", &token).await;
    assert_eq!(status, 422, "hostname is required");

    let (_, mon) = c.get("/api/monitoring/MACHINE-01/snapshot", &token).await;
    for k in ["processes", "network_connections", "network_stats", "cpu_per_core", "port_usage"] {
        assert!(mon.get(k).is_some(), "monitoring snapshot lacks {k}");
    }
    let host_id = hosts[0]["id"].as_i64().unwrap();
    let (status, by_id) = c.get(&format!("/api/monitoring/{host_id}/snapshot"), &token).await;
    assert_eq!((status, &by_id["hostname"]), (200, &json!("MACHINE-01")));

    // Export: CSV of the processes, JSON of the snapshot.
    let csv = c
        .http
        .get(c.url(&format!("/api/process-snapshots/{id}/export?format=csv")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert!(csv.headers()["content-disposition"].to_str().unwrap().contains("attachment"));
    let text = csv.text().await.unwrap();
    assert!(text.starts_with("pid,ppid,name"));
    assert!(text.contains("200,100,notepad.exe"));
    let (status, _) = c.get(&format!("/api/process-snapshots/{id}/export?format=xml"), &token).await;
    assert_eq!(status, 422);
    let range = "from=2025-08-22T09:00:00Z&to=2025-08-22T10:00:00Z";
    let (status, exported) = c.get(&format!("/api/hosts/MACHINE-01/export?format=json&{range}"), &token).await;
    assert_eq!(status, 200);
    assert_eq!(exported[0]["snapshot_id"], id);
    let (status, top) = c.get(&format!("/api/hosts/MACHINE-01/top-processes?{range}"), &token).await;
    assert_eq!(status, 200);
    assert_eq!(top[0]["name"], "explorer.exe");

    // Every path the OpenAPI document lists is routed.
    let (_, spec) = c.get("/api/openapi.json", &token).await;
    let paths = spec["paths"].as_object().unwrap();
    assert!(paths.len() >= 20);
    for path in paths.keys() {
        let concrete = path
            .replace("{server_id}", "MACHINE-01")
            .replace("{id}", &id.to_string())
            .replace("{pid}", "100")
            .replace("process-history", "process-history?pid=100")
            .replace("{action}", "kill")
            .replace("{username}", "nobody-here")
            .replace("{key}", "nothing");
        let r = c.http.get(c.url(&concrete)).send().await.unwrap();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!(
            !body["message"].as_str().unwrap_or("").starts_with("No such endpoint"),
            "{path} is documented but not routed"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_short_upload_reads_back_with_nulls_for_what_it_does_not_say() {
    let dir = temp();
    let c = Collector::start(dir.path(), &["--no-local"]);
    let key = new_key(dir.path(), "short", None);
    let token = c.admin_token().await;

    // No snapshot_time: stamped with its arrival, which the answer gives.
    let body = json!({"hostname": "short-1", "processes": [
        {"pid": 10, "name": "a", "cpu": 1.5},
        {"pid": 11, "name": "b", "memory": "2KB", "parent_pid": 10},
    ]});
    let before = chrono::Utc::now().timestamp_millis();
    let (status, answer) = c.upload(&key, body.to_string()).await;
    let after = chrono::Utc::now().timestamp_millis();
    assert_eq!(status, 201, "{answer}");
    let ms = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap().timestamp_millis();
    let stamped = ms(&answer["snapshot_time"]);
    assert!((before..=after).contains(&stamped), "{before} <= {stamped} <= {after}");

    let (_, latest) = c.get("/api/process-snapshots/latest/?hostname=short-1", &token).await;
    assert_eq!(ms(&latest["taken_at"]), stamped);
    assert_eq!(ms(&latest["snapshot_time"]), stamped);
    // Never a made-up zero: the machine's sizes and counters, and each process's start
    // time, memory share, virtual size, and the CPU or memory it left out.
    for field in ["total_bytes", "available_bytes", "swap_total_bytes", "swap_used_bytes"] {
        assert!(latest["memory"][field].is_null(), "memory.{field}: {latest}");
    }
    assert!(latest["network"]["total"].is_null(), "{latest}");
    let (a, b) = (&latest["processes"][0], &latest["processes"][1]);
    for p in [a, b] {
        for field in ["start_time", "memory_percent", "virtual_bytes"] {
            assert!(p[field].is_null(), "{field}: {p}");
        }
    }
    assert_eq!((a["cpu_percent"].as_f64(), a["cpu"].as_f64()), (Some(1.5), Some(1.5)));
    assert!(a["rss_bytes"].is_null() && a["memory"].is_null(), "{a}");
    assert!(b["cpu_percent"].is_null() && b["cpu"].is_null(), "{b}");
    assert_eq!((b["rss_bytes"].as_u64(), b["memory"].as_u64()), (Some(2048), Some(2048)));

    // The same in the other shapes it is served in.
    let (_, list) = c.get("/api/process-snapshots/list/?hostname=short-1", &token).await;
    assert!(list[0]["memory_total_bytes"].is_null(), "{list}");
    let (_, mon) = c.get("/api/monitoring/short-1/snapshot", &token).await;
    assert!(mon["network_stats"]["bytes_sent"].is_null() && mon["memory"]["total_bytes"].is_null(), "{mon}");
    let (status, history) = c.get("/api/hosts/short-1/process-history?pid=10", &token).await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history[0]["cpu_percent"].as_f64(), Some(1.5));
    assert!(history[0]["rss_bytes"].is_null() && history[0]["memory_percent"].is_null(), "{history}");
    let id = latest["snapshot_id"].as_i64().unwrap();
    let csv = c.http.get(c.url(&format!("/api/process-snapshots/{id}/export?format=csv"))).bearer_auth(&token);
    let text = csv.send().await.unwrap().text().await.unwrap();
    assert!(text.contains("\n11,10,b,,unknown,,,2048,,,,,,\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn websockets_push_snapshots_uploaded_after_connecting() {
    let dir = temp();
    let c = Collector::start(dir.path(), &["--no-local"]);
    let key = new_key(dir.path(), "web", Some("web-1"));
    let token = c.admin_token().await;
    assert_eq!(c.upload(&key, full_snapshot("web-1", 1).to_string()).await.0, 201);

    let (mut all, _) =
        tokio_tungstenite::connect_async(c.ws_url(&format!("/ws/process-snapshots/?token={token}"))).await.unwrap();
    let (mut one, _) =
        tokio_tungstenite::connect_async(c.ws_url(&format!("/ws/monitoring/web-1?token={token}"))).await.unwrap();
    // Each first sends what is current.
    assert_eq!(next(&mut all).await["seq"], 1);
    assert_eq!(next(&mut one).await["hostname"], "web-1");

    assert_eq!(c.upload(&key, full_snapshot("web-1", 2).to_string()).await.0, 201);
    let pushed = next(&mut all).await;
    assert_eq!((pushed["hostname"].as_str(), pushed["seq"].as_u64()), (Some("web-1"), Some(2)));
    assert!(pushed["snapshot_id"].is_i64());
    let pushed = next(&mut one).await;
    assert!(pushed["cpu_per_core"].is_array());
    assert!(pushed["snapshot_id"].as_i64().unwrap() > 1);

    // A stream filtered to one host sees only that host.
    let other_key = new_key(dir.path(), "db", None);
    let (mut only_web, _) =
        tokio_tungstenite::connect_async(c.ws_url(&format!("/ws/process-snapshots/?hostname=web-1&token={token}")))
            .await
            .unwrap();
    assert_eq!(next(&mut only_web).await["seq"], 2, "current first");
    assert_eq!(c.upload(&other_key, full_snapshot("db-1", 1).to_string()).await.0, 201);
    assert_eq!(c.upload(&key, full_snapshot("web-1", 3).to_string()).await.0, 201);
    let pushed = next(&mut only_web).await;
    assert_eq!((pushed["hostname"].as_str(), pushed["seq"].as_u64()), (Some("web-1"), Some(3)));

    // A WebSocket without a token, with a bad one, or for an unknown host is refused.
    assert!(tokio_tungstenite::connect_async(c.ws_url("/ws/process-snapshots/")).await.is_err());
    assert!(tokio_tungstenite::connect_async(c.ws_url("/ws/process-snapshots/?token=forged")).await.is_err());
    assert!(tokio_tungstenite::connect_async(c.ws_url(&format!("/ws/monitoring/nope?token={token}"))).await.is_err());
    assert!(
        tokio_tungstenite::connect_async(c.ws_url(&format!("/ws/process-snapshots/?hostname=nope&token={token}")))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_and_roles_are_enforced_everywhere() {
    let dir = temp();
    let c = Collector::start(dir.path(), &["--no-local"]);
    let key = new_key(dir.path(), "bound", Some("MACHINE-01"));
    let viewer = c.login("vera", &new_user(dir.path(), "vera", "viewer")).await;
    let admin = c.admin_token().await;
    assert_eq!(c.upload(&key, SEED_EXAMPLE).await.0, 201);

    let reads = [
        "/api/hosts/",
        "/api/process-snapshots/latest/",
        "/api/process-snapshots/list/",
        "/api/process-snapshots/1/",
        "/api/process-snapshots/series/?hostname=MACHINE-01",
        "/api/monitoring/MACHINE-01/snapshot",
        "/api/hosts/MACHINE-01/top-processes",
        "/api/process-snapshots/1/export?format=csv",
        "/api/audit",
        "/api/auth/me",
        "/api/openapi.json",
    ];
    for path in reads {
        let anonymous = c.http.get(c.url(path)).send().await.unwrap();
        assert_eq!(anonymous.status(), 401, "{path} without credentials");
        let body: Value = anonymous.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized");
        let with_key = c.http.get(c.url(path)).header("Authorization", format!("Api-Key {key}")).send().await.unwrap();
        assert_eq!(with_key.status(), 403, "{path} with an agent key");
        assert_eq!(c.get(path, "not-a-token").await.0, 401, "{path} with a forged token");
        assert_eq!(c.get(path, &viewer).await.0, 200, "{path} as viewer");
    }
    for path in ["/api/users", "/api/keys"] {
        assert_eq!(c.get(path, &viewer).await.0, 403, "{path} is for admins");
        assert_eq!(c.get(path, &admin).await.0, 200);
    }
    assert_eq!(c.get("/api/health", "").await.0, 200, "health needs nothing");

    // A viewer may not act; an agent key may not act either.
    let (status, body) = c.post("/api/monitoring/MACHINE-01/process/100/kill", &viewer, None).await;
    assert_eq!(status, 403);
    assert!(body["message"].as_str().unwrap().contains("operator"));
    let (_, log) = c.get("/api/audit", &admin).await;
    assert_eq!(
        (log[0]["actor"].as_str(), log[0]["result"].as_str()),
        (Some("vera"), Some("forbidden")),
        "refusals are audited"
    );

    // Uploads: only with a valid, unrevoked key, and only for the host it is bound to.
    let by_user =
        c.http.post(c.url("/api/process-snapshots/")).bearer_auth(&admin).body(SEED_EXAMPLE).send().await.unwrap();
    assert_eq!(by_user.status(), 401);
    assert_eq!(c.upload("pk_wrong", SEED_EXAMPLE).await.0, 401);
    let (status, body) = c.upload(&key, SEED_EXAMPLE.replace("MACHINE-01", "MACHINE-02")).await;
    assert_eq!(status, 403, "{body}");
    cli(dir.path(), &["apikey", "revoke", "bound"], None);
    let (status, body) = c.upload(&key, SEED_EXAMPLE).await;
    assert_eq!(status, 401);
    assert!(body["message"].as_str().unwrap().contains("revoked"));

    // Keys made through the API work too, and are shown once.
    let (status, made) = c.post("/api/keys", &admin, Some(json!({ "name": "api-made" }))).await;
    assert_eq!(status, 201);
    let api_key = made["key"].as_str().unwrap();
    let (_, keys) = c.get("/api/keys", &admin).await;
    assert!(!keys.to_string().contains(api_key), "the list never shows keys");
    assert_eq!(c.upload(api_key, full_snapshot("other-host", 1).to_string()).await.0, 201);

    // Wrong passwords are refused, and repeated ones lock the name for a while.
    for _ in 0..5 {
        let r = c
            .http
            .post(c.url("/api/auth/login"))
            .json(&json!({"username": "vera", "password": "wrong"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = c
        .http
        .post(c.url("/api/auth/login"))
        .json(&json!({"username": "vera", "password": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
}

#[tokio::test(flavor = "multi_thread")]
async fn process_actions_on_the_local_host_are_real_and_audited() {
    let dir = temp();
    let c = Collector::start(dir.path(), &["--interval", "0.5"]);
    let admin = c.admin_token().await;
    let operator = c.login("otto", &new_user(dir.path(), "otto", "operator")).await;
    let child = Sleeper::start(&marker("rest"));
    let pid = child.pid();

    // Wait for the child to show up in a local snapshot, and take its start time.
    let mut start_time = Value::Null;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while start_time.is_null() && std::time::Instant::now() < deadline {
        let (_, snap) = c.get("/api/monitoring/local/snapshot", &operator).await;
        if let Some(p) = snap["processes"].as_array().and_then(|ps| ps.iter().find(|p| p["pid"] == pid)) {
            start_time = p["start_time"].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!start_time.is_null(), "child {pid} never appeared");
    let start = start_time.as_str().unwrap().to_owned();
    let (status, history) = c
        .get(&format!("/api/hosts/local/process-history?pid={pid}&start_time={}", start.replace('+', "%2B")), &operator)
        .await;
    assert_eq!(status, 200, "{history}");
    assert!(!history.as_array().unwrap().is_empty(), "the child's history has points");
    assert!(history[0]["rss_bytes"].as_u64().unwrap() > 0);
    let (_, none) =
        c.get(&format!("/api/hosts/local/process-history?pid={pid}&start_time=2001-01-01T00:00:00Z"), &operator).await;
    assert_eq!(none.as_array().unwrap().len(), 0, "another process's history is not this one's");

    let act = |action: &str, start: Option<&str>| {
        let mut path = format!("/api/monitoring/local/process/{pid}/{action}");
        if let Some(s) = start {
            path.push_str(&format!("?start_time={}", s.replace('+', "%2B")));
        }
        path
    };
    let (status, body) = c.post(&act("suspend", Some(&start)), &operator, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success");
    assert_eq!(body["message"], format!("Process {pid} suspended"));
    assert!(wait_for(Duration::from_secs(5), || state(pid) == Some('T')));
    // The start time may also come in a JSON body.
    let (status, _) = c.post(&act("resume", None), &operator, Some(json!({ "start_time": start }))).await;
    assert_eq!(status, 200);
    assert!(wait_for(Duration::from_secs(5), || matches!(state(pid), Some('S' | 'R'))));

    // A stale start time is refused and the process lives.
    let (status, body) = c.post(&act("kill", Some("2001-01-01T00:00:00Z")), &operator, None).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("pid_reused")));
    assert!(matches!(state(pid), Some('S' | 'R')), "alive and not stopped: {:?}", state(pid));

    // pid 1 and unknown actions.
    let (status, body) = c.post("/api/monitoring/local/process/1/kill", &admin, None).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("protected")));
    assert_eq!(c.post(&act("explode", None), &operator, None).await.0, 404);
    assert_eq!(c.post("/api/monitoring/local/process/notapid/kill", &operator, None).await.0, 404);

    // Kill the whole tree: the child and its sleeping grandchild.
    let grandchildren = common::children_of(pid);
    let (status, body) = c.post(&format!("{}&tree=true", act("kill", Some(&start))), &operator, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(wait_for(Duration::from_secs(5), || common::is_gone(pid)));
    for g in grandchildren {
        assert!(wait_for(Duration::from_secs(5), || common::is_gone(g)));
    }

    // A host that reports only by upload cannot be acted on from here.
    let key = new_key(dir.path(), "m", None);
    assert_eq!(c.upload(&key, SEED_EXAMPLE).await.0, 201);
    let (status, body) = c.post("/api/monitoring/MACHINE-01/process/100/kill", &operator, None).await;
    assert_eq!(status, 503, "{body}");

    // Every attempt is in the audit log, newest first, with who, what and the result.
    let (_, log) = c.get("/api/audit", &admin).await;
    let log = log.as_array().unwrap();
    let results: Vec<(&str, &str)> =
        log.iter().map(|e| (e["action"].as_str().unwrap(), e["result"].as_str().unwrap())).collect();
    assert_eq!(
        results,
        [
            ("kill", "unsupported"),
            ("kill", "success"),
            ("kill", "protected"),
            ("kill", "pid_reused"),
            ("resume", "success"),
            ("suspend", "success")
        ]
    );
    let suspend = log.last().unwrap();
    assert_eq!(suspend["actor"], "otto");
    assert_eq!(suspend["pid"], pid);
    assert_eq!(suspend["process_name"], "sh");
    assert_eq!(log[1]["tree"], true);
    assert_eq!(log[2]["actor"], "admin");
}

async fn wait_for_async<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let dir = temp();
    let c = Collector::start(dir.path(), &["--no-local"]);
    let key = new_key(dir.path(), "k", None);
    let token = c.admin_token().await;
    assert_eq!(c.upload(&key, SEED_EXAMPLE).await.0, 201);
    let before = c.stored_count(&token).await;

    let many: Vec<String> = (0..20_001).map(|i| format!(r#"{{"pid":{i},"name":"p"}}"#)).collect();
    let cases: Vec<(&str, String, u16, Option<&str>)> = vec![
        ("malformed JSON", "{\"hostname\": ".into(), 400, None),
        ("not an object", "[]".into(), 422, None),
        ("missing hostname", r#"{"processes": []}"#.into(), 422, None),
        (
            "wrong type",
            r#"{"hostname":"h","processes":[{"pid":"one","name":"x"}]}"#.into(),
            422,
            Some("processes[0].pid"),
        ),
        (
            "bad memory",
            r#"{"hostname":"h","processes":[{"pid":1,"name":"x","memory":"lots"}]}"#.into(),
            422,
            Some("processes[0].memory"),
        ),
        ("empty hostname", r#"{"hostname":"","processes":[]}"#.into(), 422, Some("hostname")),
        ("control characters", "{\"hostname\":\"a\\u001bb\",\"processes\":[]}".into(), 422, Some("hostname")),
        (
            "too many processes",
            format!(r#"{{"hostname":"h","processes":[{}]}}"#, many.join(",")),
            422,
            Some("processes"),
        ),
    ];
    for (what, body, status, field) in cases {
        let (got, error) = c.upload(&key, body).await;
        assert_eq!(got, status, "{what}: {error}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: a message");
        assert!(error["error"].is_string(), "{what}: the one error shape");
        if let Some(field) = field {
            assert_eq!(error["field"], field, "{what}");
        }
    }
    // Over the size limit: refused from the declared length, before any body is read.
    // (A client still sending a body the server refuses may see a reset instead of the
    // answer, so the request declares the size and sends nothing.)
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = c.base.trim_start_matches("http://").to_owned();
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /api/process-snapshots/ HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Api-Key {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            17 << 20
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("\"error\":\"payload_too_large\""), "{answer}");
    }
    // Bad reads and actions.
    assert_eq!(c.get("/api/process-snapshots/999999/", &token).await.0, 404);
    assert_eq!(c.get("/api/process-snapshots/abc/", &token).await.0, 404);
    assert_eq!(c.get("/api/monitoring/no-such-host/snapshot", &token).await.0, 404);
    assert_eq!(c.get("/api/process-snapshots/series/?hostname=no-such-host", &token).await.0, 404);
    // A bad parameter is named, as a bad field is; times read as people type them.
    let (status, body) = c.get("/api/process-snapshots/list/?limit=many", &token).await;
    assert_eq!((status, body["field"].as_str()), (422, Some("limit")), "{body}");
    let (status, body) = c.get("/api/process-snapshots/series/?hostname=MACHINE-01&from=yesterday", &token).await;
    assert_eq!((status, body["field"].as_str()), (422, Some("from")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("-15m"), "{body}");
    for from in ["-15m", "2026-01-02", "1767225600", "2026-01-02T03:04:05"] {
        let (status, body) =
            c.get(&format!("/api/process-snapshots/series/?hostname=MACHINE-01&from={from}"), &token).await;
        assert_eq!(status, 200, "{from}: {body}");
    }
    assert_eq!(c.get("/api/no/such/thing", &token).await.0, 404);
    let login = c
        .http
        .post(c.url("/api/auth/login"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 400);
    let login = c.http.post(c.url("/api/auth/login")).json(&json!({"username": "admin"})).send().await.unwrap();
    assert_eq!(login.status(), 422);
    let (status, _) =
        c.post("/api/users", &token, Some(json!({"username": "x", "password": "short", "role": "viewer"}))).await;
    assert_eq!(status, 422);
    let (status, _) =
        c.post("/api/users", &token, Some(json!({"username": "x", "password": "long enough", "role": "king"}))).await;
    assert_eq!(status, 422);

    assert_eq!(c.stored_count(&token).await, before, "nothing stored by bad input");
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_everything_and_history_is_rolled_up() {
    let dir = temp();
    let mut c = Collector::start(dir.path(), &["--no-local"]);
    let key = new_key(dir.path(), "k", None);
    let token = c.admin_token().await;
    // Three hours of history, one snapshot a minute, with a spike in the middle.
    let start = chrono::Utc::now() - chrono::Duration::hours(4);
    let spike_at = start + chrono::Duration::minutes(90);
    for minute in 0..180 {
        let at = start + chrono::Duration::minutes(minute);
        let spiking = at == spike_at;
        let body = json!({
            "hostname": "hist-1",
            "snapshot_time": at,
            "processes": [
                { "pid": 10, "name": "steady", "cpu": 5.0, "memory": "100MB" },
                { "pid": 20, "name": if spiking { "spiker" } else { "quiet" }, "cpu": if spiking { 95.0 } else { 1.0 }, "memory": "10MB" }
            ]
        });
        assert_eq!(c.upload(&key, body.to_string()).await.0, 201);
    }
    assert_eq!(c.stored_count(&token).await, 180);
    assert!(c.stop(), "a clean exit on SIGTERM");

    // Restart with a short raw retention: maintenance at start rolls the old snapshots
    // into minute buckets and deletes them.
    let mut c2 = Collector::start(dir.path(), &["--no-local", "--keep-raw", "30m"]);
    assert!(c2.admin_password.is_none(), "users survive a restart");
    let (status, _) = c2.get("/api/hosts/", &token).await;
    assert_eq!(status, 200, "tokens survive a restart");
    assert!(
        wait_for_async(Duration::from_secs(20), || async { c2.stored_count(&token).await == 0 }).await,
        "raw snapshots past retention are deleted"
    );
    let from = (start - chrono::Duration::minutes(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let to = (start + chrono::Duration::hours(3)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (status, series) =
        c2.get(&format!("/api/process-snapshots/series/?hostname=hist-1&from={from}&to={to}"), &token).await;
    assert_eq!(status, 200, "{series}");
    assert_eq!(series["tier"], "minute");
    let points = series["points"].as_array().unwrap();
    assert!(points.len() >= 170, "{} points", points.len());
    let (_, top) = c2.get(&format!("/api/hosts/hist-1/top-processes?from={from}&to={to}"), &token).await;
    assert_eq!(top[0]["name"], "spiker", "{top}");
    let peak: chrono::DateTime<chrono::Utc> = serde_json::from_value(top[0]["cpu_peak_at"].clone()).unwrap();
    assert!((peak - spike_at).num_seconds().abs() < 61, "peak at {peak}, spike at {spike_at}");
    assert!(c2.stop());
    drop(c);
}

/// An agent that does not redact (an old one, or not ours) uploads command lines with
/// secrets in them, in both upload formats: what is stored and read back is masked.
#[tokio::test(flavor = "multi_thread")]
async fn uploaded_command_lines_are_redacted_again() {
    let dir = temp();
    let c = Collector::start(dir.path(), &["--no-local"]);
    let key = new_key(dir.path(), "careless", None);
    let token = c.admin_token().await;

    let mut full = full_snapshot("careless-1", 1);
    let procs = full["processes"].as_array_mut().unwrap();
    procs.truncate(2);
    procs[0]["cmd"] = json!("mysqld --password hunter2 --port 3306");
    procs[1]["cmd"] = json!("curl\t-H\tX-Api-Key: hunter2\thttps://h/a?token=hunter2");
    let (status, body) = c.upload(&key, full.to_string()).await;
    assert_eq!(status, 201, "{body}");
    let full_id = body["snapshot_id"].as_i64().unwrap();

    let short = json!({
        "hostname": "careless-2",
        "snapshot_time": "2025-08-22T09:15:00Z",
        "processes": [{"pid": 7, "name": "redis-cli", "cmdline": "redis-cli -a hunter2 ping"}],
    });
    let (status, body) = c.upload(&key, short.to_string()).await;
    assert_eq!(status, 201, "{body}");
    let short_id = body["snapshot_id"].as_i64().unwrap();

    let (status, stored) = c.get(&format!("/api/process-snapshots/{full_id}/export?format=json"), &token).await;
    assert_eq!(status, 200, "{stored}");
    let cmds: Vec<&str> = stored["processes"].as_array().unwrap().iter().map(|p| p["cmd"].as_str().unwrap()).collect();
    // A line that was masked comes out as the sampler makes them: tabs as spaces.
    assert_eq!(cmds, ["mysqld --password *** --port 3306", "curl -H X-Api-Key: *** https://h/a?token=***"]);
    let (_, stored) = c.get(&format!("/api/process-snapshots/{short_id}/export?format=json"), &token).await;
    assert_eq!(stored["processes"][0]["cmd"], "redis-cli -a *** ping");

    // Nowhere to be read: not in the seed API's views, not in the fleet-wide listing.
    for path in [
        format!("/api/process-snapshots/{full_id}/"),
        "/api/monitoring/careless-1/snapshot".to_owned(),
        "/api/process-snapshots/latest/".to_owned(),
        format!("/api/process-snapshots/{full_id}/export?format=csv"),
    ] {
        let text = c.http.get(c.url(&path)).bearer_auth(&token).send().await.unwrap().text().await.unwrap();
        assert!(!text.contains("hunter2"), "{path}: {text}");
    }
}

/// `serve --cmdline exe` keeps only the program of this machine's own processes.
#[tokio::test(flavor = "multi_thread")]
async fn serve_cuts_its_own_command_lines_to_the_program_when_told() {
    let dir = temp();
    let c = Collector::start(dir.path(), &["--cmdline", "exe", "--interval", "0.5"]);
    let token = c.admin_token().await;
    let child = Sleeper::start(&marker("exe-only"));
    let started = std::time::Instant::now();
    let cmd = loop {
        assert!(started.elapsed() < Duration::from_secs(20), "the child shows up in a local snapshot");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (_, hosts) = c.get("/api/hosts/", &token).await;
        let Some(local) = hosts.as_array().and_then(|h| h.iter().find(|h| h["local"] == true)) else { continue };
        let name = local["hostname"].as_str().unwrap();
        let (_, list) = c.get(&format!("/api/process-snapshots/list/?hostname={name}"), &token).await;
        let Some(id) = list.as_array().and_then(|l| l.first()).map(|s| s["snapshot_id"].clone()) else { continue };
        let (_, snap) = c.get(&format!("/api/process-snapshots/{id}/export?format=json"), &token).await;
        let procs = snap["processes"].as_array().cloned().unwrap_or_default();
        if let Some(p) = procs.iter().find(|p| p["pid"] == child.pid()) {
            assert!(procs.iter().all(|p| !p["cmd"].as_str().unwrap().contains(' ')), "one word each");
            break p["cmd"].as_str().map(str::to_owned);
        }
    };
    assert_eq!(cmd.as_deref(), Some("sh"));
}

/// The collector opts out of transparent huge pages for its whole address space (see
/// `serve` in main.rs): with them its resident size kept rising under steady load as
/// the kernel filled its allocator's arena with whole 2 MiB pages. The kernel reports
/// the setting in the process's status (Linux 5.0 and later).
#[cfg(target_os = "linux")]
#[test]
fn the_collector_opts_out_of_transparent_huge_pages() {
    let dir = temp();
    let mut collector = Collector::start(dir.path(), &[]);
    let pid = collector.child.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let thp = status.lines().find_map(|l| l.strip_prefix("THP_enabled:")).map(str::trim);
    assert_eq!(thp, Some("0"), "{status}");
    assert!(collector.stop());
}
