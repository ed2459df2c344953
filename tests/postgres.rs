//! The collector on PostgreSQL end to end: `procyon serve --database postgres://...` on a
//! throwaway cluster (see `common::postgres`), a real `procyon-agent`, everything read
//! back through the REST API; the token signing key kept in the database; PostgreSQL
//! stopped and started again under a running collector; two collectors on one database,
//! sharing live snapshots, process actions and one maintenance leader.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::collector::{BIN, Collector, SEED_EXAMPLE, agent_bin, cli};
use common::{Sleeper, marker, state};
use futures_util::StreamExt;

/// An API key made through the CLI on `url`'s database.
fn new_key(data: &Path, url: &str, name: &str) -> String {
    cli(data, &["apikey", "create", "--name", name, "--database", url], None).lines().last().unwrap().trim().to_owned()
}

/// A running agent, killed when dropped.
struct Agent(Child);

impl Agent {
    fn start(collector: &str, key: &str, hostname: &str, dir: &Path) -> Agent {
        Agent::start_with(collector, key, hostname, dir, &[])
    }

    fn start_with(collector: &str, key: &str, hostname: &str, dir: &Path, extra: &[&str]) -> Agent {
        use std::os::unix::fs::PermissionsExt;
        let key_file = dir.join(format!("{hostname}.key"));
        std::fs::write(&key_file, key).unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let child = Command::new(agent_bin())
            .env("PROCYON_CONFIG", "/dev/null")
            .args(["--collector", collector, "--hostname", hostname, "--interval", "0.3", "--api-key-file"])
            .arg(&key_file)
            .arg("--spool")
            .arg(dir.join(format!("{hostname}.spool")))
            .args(extra)
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

/// Polls `cond` every 150 ms until it holds; panics after `limit`.
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

/// Every stored seq of `hostname`, ascending.
async fn seqs(c: &Collector, token: &str, hostname: &str) -> Vec<u64> {
    let (status, list) = c.get(&format!("/api/process-snapshots/list/?hostname={hostname}&limit=1000"), token).await;
    if status != 200 {
        return Vec::new();
    }
    let mut seqs: Vec<u64> = list.as_array().unwrap().iter().map(|s| s["seq"].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    seqs
}

/// Uploads that must be refused, the same way whatever the database.
fn bad_uploads() -> Vec<(&'static str, String)> {
    vec![
        ("not JSON", "{not json".into()),
        ("wrong type", r#"{"hostname":"h","processes":[{"pid":"one","name":"x"}]}"#.into()),
        ("empty hostname", r#"{"hostname":"","processes":[]}"#.into()),
        ("control characters", "{\"hostname\":\"a\\u001bb\",\"processes\":[]}".into()),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collector_on_postgres_stores_an_agents_snapshots_and_answers_as_on_sqlite() {
    let Some(url) = common::postgres::database() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let c = Collector::start(&data, &["--no-local", "--database", &url]);
    let token = c.admin_token().await;
    let key = new_key(&data, &url, "fleet");
    let _agent = Agent::start(&c.base, &key, "pg-web-1", dir.path());

    wait_until(Duration::from_secs(60), "the agent's snapshots", || async {
        seqs(&c, &token, "pg-web-1").await.len() >= 5
    })
    .await;
    let stored = seqs(&c, &token, "pg-web-1").await;
    assert_eq!(stored[0], 1);
    assert!(stored.windows(2).all(|w| w[1] == w[0] + 1), "every seq once: {stored:?}");

    let (status, hosts) = c.get("/api/hosts/", &token).await;
    assert_eq!(status, 200);
    let host = hosts.as_array().unwrap().iter().find(|h| h["hostname"] == "pg-web-1").expect("the host is listed");
    assert!(host["snapshot_count"].as_i64().unwrap() >= 5, "{host}");
    assert_eq!(host["online"], true);

    // A stored snapshot read back whole (the agent sends deltas after its first).
    let (_, list) = c.get("/api/process-snapshots/list/?hostname=pg-web-1&limit=3", &token).await;
    let id = list[0]["snapshot_id"].as_i64().unwrap();
    let (status, one) = c.get(&format!("/api/process-snapshots/{id}/"), &token).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["hostname"], "pg-web-1");
    assert!(!one["processes"].as_array().unwrap().is_empty());
    let (status, series) = c.get("/api/process-snapshots/series/?hostname=pg-web-1&limit=10", &token).await;
    assert_eq!(status, 200, "{series}");
    assert!(!series["points"].as_array().unwrap().is_empty(), "{series}");
    let (status, health) = c.get("/api/health", &token).await;
    assert_eq!(status, 200, "{health}");

    // The seed's example upload: stored once, a duplicate the second time.
    let (status, body) = c.upload(&key, SEED_EXAMPLE).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = c.upload(&key, SEED_EXAMPLE).await;
    assert_eq!((status, body["duplicate"].as_bool()), (200, Some(true)));

    // Bad uploads get exactly the answers a collector on SQLite gives.
    let sqlite_dir = tempfile::tempdir().unwrap();
    let lite = Collector::start(sqlite_dir.path(), &["--no-local"]);
    let lite_key = common::collector::new_key(sqlite_dir.path(), "fleet", None);
    for (what, body) in bad_uploads() {
        let on_postgres = c.upload(&key, body.clone()).await;
        let on_sqlite = lite.upload(&lite_key, body).await;
        assert!((400..500).contains(&on_postgres.0), "{what}: {on_postgres:?}");
        assert_eq!(on_postgres, on_sqlite, "{what}");
    }

    // Nothing went to a SQLite file, and the signing key is not in the data directory.
    assert!(!data.join("procyon.db").exists());
    assert!(!data.join("token-signing.key").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_is_valid_on_every_collector_of_the_database() {
    let Some(url) = common::postgres::database() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut first = Collector::start(&dir.path().join("a"), &["--no-local", "--database", &url]);
    let token = first.admin_token().await;
    assert!(first.stop());
    // Another collector, with a data directory of its own, on the same database.
    let second = Collector::start(&dir.path().join("b"), &["--no-local", "--database", &url]);
    assert!(second.admin_password.is_none(), "the users are the database's: no new first admin");
    let (status, users) = second.get("/api/users", &token).await;
    assert_eq!(status, 200, "{users}");
    assert_eq!(users[0]["username"], "admin");
}

#[tokio::test(flavor = "multi_thread")]
async fn while_postgres_is_down_the_collector_answers_503_and_recovers() {
    let Some(cluster) = common::postgres::cluster() else { return };
    let url = cluster.database();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let c = Collector::start(&data, &["--no-local", "--database", &url]);
    let token = c.admin_token().await;
    let key = new_key(&data, &url, "fleet");
    // The seed's example at another minute each time: a seed-style upload's seq is its time.
    let upload = |minute: u32| SEED_EXAMPLE.replace("09:15:00Z", &format!("09:{minute:02}:00Z"));
    assert_eq!(c.upload(&key, upload(15)).await.0, 201);
    let _agent = Agent::start(&c.base, &key, "pg-outage", dir.path());
    wait_until(Duration::from_secs(60), "the agent's snapshots", || async {
        seqs(&c, &token, "pg-outage").await.len() >= 3
    })
    .await;

    cluster.stop();
    // The collector's cached sign-in and key checks may answer a little longer; then the
    // database is needed, and the answer is a 503 that says so.
    let start = Instant::now();
    let refused = loop {
        let answer = c.upload(&key, upload(16)).await;
        if answer.0 == 503 {
            break answer;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no 503 while PostgreSQL is down: {answer:?}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    };
    let (_, body) = refused;
    assert_eq!(body["error"], "database_unreachable", "{body}");
    assert!(body["message"].as_str().unwrap().contains("unreachable"), "{body}");
    let (status, _) = c.get("/api/process-snapshots/list/?hostname=MACHINE-01", &token).await;
    assert_eq!(status, 503);

    cluster.start_again().unwrap();
    wait_until(Duration::from_secs(60), "the collector to store again", || async {
        c.upload(&key, upload(16)).await.0 == 201
    })
    .await;
    assert_eq!(seqs(&c, &token, "MACHINE-01").await.len(), 2, "stored once, after the outage");
    // The agent kept what it took meanwhile and sent it again: every seq, once.
    let before = seqs(&c, &token, "pg-outage").await.len();
    wait_until(Duration::from_secs(60), "the agent's backlog", || async {
        seqs(&c, &token, "pg-outage").await.len() >= before + 20
    })
    .await;
    let stored = seqs(&c, &token, "pg-outage").await;
    assert_eq!(stored[0], 1);
    assert!(stored.windows(2).all(|w| w[1] == w[0] + 1), "every seq once: {stored:?}");
}

#[test]
fn a_database_url_is_checked_and_its_password_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    for url in ["mysql://procyon:hunter2@db/procyon", "postgres://procyon:hunter2@db:port/procyon"] {
        let out = Command::new(BIN)
            .args(["user", "list", "--data"])
            .arg(dir.path())
            .args(["--database", url])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}: {stderr}");
        assert!(stderr.contains("PostgreSQL URL"), "{url}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{url}: {stderr}");
    }
    // Nor in --help, where clap shows other variables' values.
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .env("PROCYON_DATABASE", "postgres://procyon:hunter2@db/procyon")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--database") && help.contains("PROCYON_DATABASE"), "{help}");
    assert!(!help.contains("hunter2"), "{help}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sqlite_collector_moves_to_postgres_with_db_copy() {
    let Some(url) = common::postgres::database() else { return };
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old");
    // The seed's example is from 2025: kept whole, so that it reads back the same.
    let keep = ["--keep-raw", "20years", "--keep-minutes", "20years"];
    let mut lite = Collector::start(&old, &[&["--no-local"][..], &keep].concat());
    let token = lite.admin_token().await;
    let key = common::collector::new_key(&old, "machine-01", None);
    let (status, body) = lite.upload(&key, SEED_EXAMPLE).await;
    assert_eq!(status, 201, "{body}");
    let id = body["snapshot_id"].as_i64().unwrap();
    assert!(lite.stop());

    let out = Command::new(BIN).args(["db", "copy", "--from"]).arg(&old).args(["--to", &url]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("1 hosts, 1 snapshots") && said.contains("token signing key"), "{said}");

    // The new collector serves the old one's data, to the old one's token and key.
    let pg = Collector::start(&dir.path().join("new"), &[&["--no-local", "--database", &url][..], &keep].concat());
    assert!(pg.admin_password.is_none(), "the old users came along");
    let (status, one) = pg.get(&format!("/api/process-snapshots/{id}/"), &token).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["hostname"], "MACHINE-01");
    let (status, body) = pg.upload(&key, SEED_EXAMPLE.replace("09:15:00Z", "09:16:00Z")).await;
    assert_eq!(status, 201, "{body}");
    assert!(body["snapshot_id"].as_i64().unwrap() > id);

    // Again into a database that holds data: refused.
    let out = Command::new(BIN).args(["db", "copy", "--from"]).arg(&old).args(["--to", &url]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds data already"));
}

/// The next JSON message of a WebSocket, within a generous deadline.
async fn next_message<S>(ws: &mut S) -> serde_json::Value
where
    S: futures_util::Stream<
            Item = Result<tokio_tungstenite::tungstenite::Message, tokio_tungstenite::tungstenite::Error>,
        > + Unpin,
{
    let message = tokio::time::timeout(Duration::from_secs(30), ws.next())
        .await
        .expect("a live message in time")
        .expect("the stream is open")
        .unwrap();
    serde_json::from_str(message.to_text().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_collectors_on_one_database_share_live_snapshots_and_process_actions() {
    let Some(url) = common::postgres::database() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (a_data, b_data) = (dir.path().join("a"), dir.path().join("b"));
    let a = Collector::start(&a_data, &["--no-local", "--database", &url]);
    let token = a.admin_token().await;
    let b = Collector::start(&b_data, &["--no-local", "--database", &url]);
    let key = new_key(&a_data, &url, "fleet");
    // The agent reports to B only; everything below is asked of A.
    let _agent = Agent::start_with(&b.base, &key, "pg-on-b", dir.path(), &["--allow-control"]);
    wait_until(Duration::from_secs(60), "B's agent's snapshots", || async {
        seqs(&a, &token, "pg-on-b").await.len() >= 2
    })
    .await;

    // A's fleet overview shows B's agent live from the figures B announces with each
    // snapshot, and nobody follows it on A yet: A reads none of its snapshots back.
    wait_until(Duration::from_secs(60), "B's host's figures on A", || async {
        let (_, hosts) = a.get("/api/hosts/", &token).await;
        let host = hosts.as_array().unwrap().iter().find(|h| h["hostname"] == "pg-on-b").cloned();
        host.is_some_and(|h| h["online"] == true && h["figures"]["cpu_trend"].as_array().is_some_and(|t| t.len() >= 3))
    })
    .await;
    let (mut overview, _) =
        tokio_tungstenite::connect_async(a.ws_url(&format!("/ws/fleet?token={token}"))).await.unwrap();
    let rows = next_message(&mut overview).await;
    let row = rows["rows"].as_array().unwrap().iter().find(|r| r["hostname"] == "pg-on-b").cloned();
    let row = row.unwrap_or_else(|| panic!("{rows}"));
    assert!(row["online"] == true && row["figures"]["process_count"].as_u64().unwrap() > 1, "{rows}");
    // Anyone who may connect to the database may notify on its channels: made-up
    // announcements show nothing (a host nobody stored, a stored host's id under
    // another name).
    let (_, hosts) = a.get("/api/hosts/", &token).await;
    let host_id =
        hosts.as_array().unwrap().iter().find(|h| h["hostname"] == "pg-on-b").unwrap()["id"].as_i64().unwrap();
    let made_up = |host_id: i64| {
        let announced =
            serde_json::json!({"hostname": "ghost", "received_at": chrono::Utc::now(), "figures": row["figures"]});
        format!("1:{host_id}:999999999 {announced}")
    };
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.unwrap();
    for payload in [made_up(host_id + 1000), made_up(host_id)] {
        sqlx::query("SELECT pg_notify('procyon_snapshots', $1)").bind(payload).execute(&mut db).await.unwrap();
    }
    for _ in 0..2 {
        let rows = next_message(&mut overview).await;
        assert!(!rows.to_string().contains("ghost"), "{rows}");
    }
    drop(overview);
    // The live network map on A reads B's host from the database when asked.
    let (status, map) = a.get("/api/network-map?hosts=pg-on-b", &token).await;
    assert_eq!(status, 200, "{map}");
    assert_eq!((map["live"].as_bool(), map["hosts"][0]["hostname"].as_str()), (Some(true), Some("pg-on-b")), "{map}");
    assert!(!map["nodes"].as_array().unwrap().is_empty(), "{map}");
    // A read back the host's first snapshot only (or the second too, announced while
    // the first was read), which made it known under its id.
    let first = read_back(&a, &token).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let then = read_back(&a, &token).await;
    assert!((1..=2).contains(&first) && then == first, "A reads back a host nobody follows on it: {first}, {then}");
    // Its metrics are B's to serve, once.
    let on = |text: &str| text.contains("procyon_host_online{hostname=\"pg-on-b\"");
    assert!(on(&metrics(&b, &token).await) && !on(&metrics(&a, &token).await));

    // A dashboard on A follows B's agent live: after what is current, every new snapshot.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(a.ws_url(&format!("/ws/monitoring/pg-on-b?token={token}"))).await.unwrap();
    let current = next_message(&mut ws).await;
    assert_eq!(current["hostname"], "pg-on-b", "{current}");
    let mut last = current["snapshot_id"].as_i64().unwrap_or_else(|| panic!("{current}"));
    for _ in 0..3 {
        let pushed = next_message(&mut ws).await;
        let id = pushed["snapshot_id"].as_i64().unwrap_or_else(|| panic!("{pushed}"));
        assert!(id > last, "live snapshots in order: {id} after {last}");
        last = id;
    }
    // How long from B receiving a snapshot to A's dashboard having it (B stores and
    // announces it, A reads it back and streams it), for the record; never asserted.
    let mut delays: Vec<f64> = Vec::new();
    for _ in 0..20 {
        let pushed = next_message(&mut ws).await;
        let at: chrono::DateTime<chrono::Utc> = serde_json::from_value(pushed["received_at"].clone()).unwrap();
        delays.push((chrono::Utc::now() - at).as_seconds_f64() * 1000.0);
    }
    delays.sort_by(f64::total_cmp);
    println!("from B's receipt to A's dashboard: p50 {:.1} ms, max of 20 {:.1} ms", delays[10], delays[19]);
    // The all-hosts stream of A too.
    let (mut all, _) =
        tokio_tungstenite::connect_async(a.ws_url(&format!("/ws/process-snapshots/?hostname=pg-on-b&token={token}")))
            .await
            .unwrap();
    let first = next_message(&mut all).await["seq"].as_u64().unwrap();
    let pushed = next_message(&mut all).await;
    assert!(pushed["seq"].as_u64().unwrap() > first, "{pushed}");
    assert!(read_back(&a, &token).await >= 20, "followed, B's host is read back on A");
    // Once nobody follows it on A, A stops reading it back.
    drop((ws, all));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut before = read_back(&a, &token).await;
    loop {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let now = read_back(&a, &token).await;
        if now == before {
            break;
        }
        assert!(Instant::now() < deadline, "A still reads B's host back after its streams closed");
        before = now;
    }

    // A process on B's agent's machine (this one), suspended and resumed through A.
    let child = Sleeper::start(&marker("fleet"));
    let pid = child.pid();
    let deadline = Instant::now() + Duration::from_secs(60);
    let start_time = loop {
        let (_, snap) = a.get("/api/monitoring/pg-on-b/snapshot", &token).await;
        if let Some(p) = snap["processes"].as_array().and_then(|ps| ps.iter().find(|p| p["pid"] == pid)) {
            break p["start_time"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "the child never appeared in the agent's snapshot");
        tokio::time::sleep(Duration::from_millis(150)).await;
    };
    let act = |action: &str| {
        format!("/api/monitoring/pg-on-b/process/{pid}/{action}?start_time={}", start_time.replace('+', "%2B"))
    };
    let (status, body) = a.post(&act("suspend"), &token, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], format!("Process {pid} suspended"));
    assert!(common::wait_for(Duration::from_secs(10), || state(pid) == Some('T')), "{:?}", state(pid));
    let (status, body) = a.post(&act("resume"), &token, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(common::wait_for(Duration::from_secs(10), || matches!(state(pid), Some('S' | 'R'))));
    // The agent's guard answers through B as it would locally: a stale start time is 409.
    let stale = format!("/api/monitoring/pg-on-b/process/{pid}/kill?start_time=2001-01-01T00:00:00Z");
    let (status, body) = a.post(&stale, &token, None).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("pid_reused")), "{body}");
    assert!(matches!(state(pid), Some('S' | 'R')), "untouched");

    // Its details, read by B's agent for a request made on A.
    let (status, details) = a.get(&format!("/api/hosts/pg-on-b/processes/{pid}/details"), &token).await;
    assert_eq!(status, 200, "{details}");
    assert_eq!((details["pid"].as_u64(), details["name"].as_str()), (Some(u64::from(pid)), Some("sh")), "{details}");
    assert!(details["threads_total"].as_u64().unwrap() >= 1, "{details}");

    // Audited once each, by the collector asked, seen from both.
    for c in [&a, &b] {
        let (_, log) = c.get("/api/audit?host=pg-on-b", &token).await;
        let entries: Vec<(&str, &str)> = log
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["action"].as_str().unwrap(), e["result"].as_str().unwrap()))
            .collect();
        assert_eq!(
            entries,
            [("details", "success"), ("kill", "pid_reused"), ("resume", "success"), ("suspend", "success")]
        );
        assert_eq!(log[2]["process_name"], "sh");
    }

    // A host no collector holds an agent of: the same clear error as on one collector.
    assert_eq!(a.upload(&key, SEED_EXAMPLE).await.0, 201);
    let (status, body) =
        a.post("/api/monitoring/MACHINE-01/process/4242/kill?start_time=2001-01-01T00:00:00Z", &token, None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["message"].as_str().unwrap().contains("No agent is connected for host `MACHINE-01`"), "{body}");
}

/// Collector `c`'s `/metrics`, in the Prometheus text format.
async fn metrics(c: &Collector, token: &str) -> String {
    c.http.get(c.url("/metrics")).bearer_auth(token).send().await.unwrap().text().await.unwrap()
}

/// `procyon_snapshots_read_back_total` on collector `c`'s `/metrics`.
async fn read_back(c: &Collector, token: &str) -> u64 {
    let text = metrics(c, token).await;
    let line =
        text.lines().find(|l| l.starts_with("procyon_snapshots_read_back_total ")).unwrap_or_else(|| panic!("{text}"));
    line.split(' ').nth(1).unwrap().parse::<f64>().unwrap() as u64
}

/// Whether `log` (a collector's log file) says it leads the fleet's maintenance.
fn leads(log: &Path) -> bool {
    std::fs::read_to_string(log).unwrap_or_default().contains("runs rollups and retention for the fleet")
}

#[tokio::test(flavor = "multi_thread")]
async fn one_collector_runs_maintenance_and_another_takes_over_when_it_dies() {
    let Some(url) = common::postgres::database() else { return };
    let dir = tempfile::tempdir().unwrap();
    let logs = [dir.path().join("a.log"), dir.path().join("b.log")];
    let flags = ["--no-local", "--database", &url];
    let mut collectors = [
        Collector::start_logging(&dir.path().join("a"), &flags, Some(&logs[0])),
        Collector::start_logging(&dir.path().join("b"), &flags, Some(&logs[1])),
    ];
    wait_until(Duration::from_secs(60), "a maintenance leader", || async { logs.iter().any(|l| leads(l)) }).await;
    // Long enough for the other to have tried a few times: it never gets the lead while
    // the leader lives.
    tokio::time::sleep(Duration::from_secs(16)).await;
    let leader = logs.iter().position(|l| leads(l)).unwrap();
    let other = 1 - leader;
    assert!(!leads(&logs[other]), "both collectors lead the maintenance");

    // The leader dies without a word (SIGKILL): its session ends, and the other leads.
    let mut dead = collectors[leader].child.take().unwrap();
    dead.kill().unwrap();
    dead.wait().unwrap();
    wait_until(Duration::from_secs(60), "the other collector to lead", || async { leads(&logs[other]) }).await;
    assert!(collectors[other].stop());
}
