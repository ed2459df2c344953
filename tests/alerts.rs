//! Alerts end to end: a real `procyon serve` evaluating what a real `procyon-agent` (or
//! its own sampler) publishes, real child processes to watch, and real receivers: an
//! HTTP server in the test that records what it is sent in Alertmanager's webhook
//! format, and Debian's `prometheus-alertmanager` on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use common::collector::{Collector, agent_bin, new_key, new_user};
use common::{Sleeper, marker};
use serde_json::{Value, json};

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

/// An HTTP receiver: every POST body it gets, in order. The first `fail_first` requests
/// are answered 500.
#[derive(Clone)]
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Value>>>,
}

#[derive(Clone)]
struct ReceiverState {
    got: Arc<Mutex<Vec<Value>>>,
    failures_left: Arc<AtomicUsize>,
}

async fn receive(State(s): State<ReceiverState>, body: axum::body::Bytes) -> StatusCode {
    let left = s.failures_left.load(Ordering::SeqCst);
    if left > 0 {
        s.failures_left.store(left - 1, Ordering::SeqCst);
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let value = serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    s.got.lock().unwrap().push(value);
    StatusCode::OK
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let state = ReceiverState { got: got.clone(), failures_left: Arc::new(AtomicUsize::new(fail_first)) };
        let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, got }
    }

    fn messages(&self) -> Vec<Value> {
        self.got.lock().unwrap().clone()
    }

    /// `(status, alertname)` of each webhook message received for `rule`.
    fn statuses(&self, rule: &str) -> Vec<String> {
        self.messages()
            .iter()
            .filter(|m| m["alerts"][0]["labels"]["alertname"] == rule)
            .map(|m| m["status"].as_str().unwrap_or("").to_owned())
            .collect()
    }
}

async fn put(c: &Collector, path: &str, token: &str, body: Value) -> (u16, Value) {
    let r = c.http.put(c.url(path)).bearer_auth(token).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn delete(c: &Collector, path: &str, token: &str) -> u16 {
    c.http.delete(c.url(path)).bearer_auth(token).send().await.unwrap().status().as_u16()
}

async fn make(c: &Collector, token: &str, path: &str, body: Value) {
    let (status, answer) = c.post(path, token, Some(body.clone())).await;
    assert_eq!(status, 201, "{path} {body}: {answer}");
}

async fn alert_states(c: &Collector, token: &str, rule: &str) -> Vec<String> {
    let (status, alerts) = c.get("/api/alerts", token).await;
    assert_eq!(status, 200);
    alerts
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["rule"] == rule)
        .map(|a| a["state"].as_str().unwrap().to_owned())
        .collect()
}

/// A busy child, killed when dropped (a failed test must not leave it spinning).
struct Busy(Child);

impl Busy {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running agent, killed when dropped.
struct Agent(Child);

impl Agent {
    fn start(collector: &str, key: &Path, hostname: &str, spool: &Path) -> Agent {
        let child = Command::new(agent_bin())
            .env("PROCYON_CONFIG", "/dev/null")
            .args(["--collector", collector, "--hostname", hostname, "--interval", "0.5", "--api-key-file"])
            .arg(key)
            .arg("--spool")
            .arg(spool)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Agent(child)
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

fn key_file(dir: &Path, key: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("agent.key");
    std::fs::write(&path, key).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// An agent killed and started again under a `host.offline` rule: the receiver gets one
/// `firing`, then one `resolved`, in Alertmanager's format; a collector restart in
/// between neither fires again nor forgets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_stops_fires_host_offline_once_and_its_return_resolves_it() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(0).await;
    let mut c = Collector::start(dir.path(), &["--no-local"]);
    let token = c.admin_token().await;
    let host = "alerts-offline-host";
    make(&c, &token, "/api/alert-channels", json!({"name": "hook", "kind": "webhook", "url": receiver.url})).await;
    make(
        &c,
        &token,
        "/api/alert-rules",
        json!({"name": "offline", "metric": "host.offline", "host": host, "for_secs": 5,
               "severity": "critical", "channels": ["hook"]}),
    )
    .await;
    let key = key_file(dir.path(), &new_key(dir.path(), "agent", Some(host)));
    let spool = dir.path().join("spool");
    let mut agent = Agent::start(&c.base, &key, host, &spool);
    let (t, cc) = (&token, &c);
    assert!(
        eventually(Duration::from_secs(30), async || cc.get("/api/hosts/", t).await.1.to_string().contains(host)).await,
        "the agent reports"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(receiver.statuses("offline").is_empty(), "a host that reports is not offline");

    agent.kill();
    assert!(
        eventually(Duration::from_secs(30), async || receiver.statuses("offline") == ["firing"]).await,
        "firing after the agent stopped: {:?}",
        receiver.messages()
    );
    let message = &receiver.messages()[0];
    assert_eq!(message["version"], "4");
    assert_eq!(message["receiver"], "hook");
    let alert = &message["alerts"][0];
    assert_eq!(alert["status"], "firing");
    assert_eq!(alert["labels"]["hostname"], host);
    assert_eq!(alert["labels"]["severity"], "critical");
    assert!(alert["annotations"]["summary"].as_str().unwrap().contains(host));
    assert!(alert["startsAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(alert_states(&c, &token, "offline").await, ["firing"]);

    // A restart of the collector while it fires: it remembers, and does not fire again.
    assert!(c.stop());
    let c = Collector::start(dir.path(), &["--no-local"]);
    let password = std::fs::read_to_string(dir.path().join("initial-admin-password")).unwrap();
    let token = c.login("admin", password.trim()).await;
    assert_eq!(alert_states(&c, &token, "offline").await, ["firing"], "the state survives a restart");
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(receiver.statuses("offline"), ["firing"], "once only: no repeat without repeat_secs");

    let _agent = Agent::start(&c.base, &key, host, &spool);
    assert!(
        eventually(Duration::from_secs(30), async || receiver.statuses("offline") == ["firing", "resolved"]).await,
        "resolved when it came back: {:?}",
        receiver.messages()
    );
    let resolved = &receiver.messages()[1];
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["alerts"][0]["fingerprint"], alert["fingerprint"]);
    assert_ne!(resolved["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(resolved["alerts"][0]["startsAt"], alert["startsAt"]);
    let (_, history) = c.get("/api/alerts/history", &token).await;
    let states: Vec<&str> = history.as_array().unwrap().iter().map(|e| e["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["resolved", "firing"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.statuses("offline"), ["firing", "resolved"]);
}

/// A busy child fires `process.cpu_percent` after `for_secs` (the receiver's first
/// answer is an error: the notification is retried and every attempt recorded), killing
/// it resolves it; `process.absent` fires when a named child exits, and a silence holds
/// another rule's notification back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_fire_and_resolve_and_a_silence_holds_back() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(1).await;
    let c = Collector::start(dir.path(), &["--interval", "0.5"]);
    let token = c.admin_token().await;
    make(&c, &token, "/api/alert-channels", json!({"name": "hook", "kind": "webhook", "url": receiver.url})).await;

    let busy_marker = marker("busy");
    make(
        &c,
        &token,
        "/api/alert-rules",
        json!({"name": "busy", "metric": "process.cpu_percent", "process": format!("cmd:{busy_marker}"),
               "op": ">", "threshold": 5, "clear": 1, "for_secs": 2, "channels": ["hook"]}),
    )
    .await;
    let (kept_marker, gone_marker) = (marker("kept"), marker("gone"));
    let kept = Sleeper::start(&kept_marker);
    let gone = Sleeper::start(&gone_marker);
    let gone_filter = format!("cmd:{gone_marker}");
    let kept_filter = format!("cmd:{kept_marker}");
    for (name, filter) in [("gone", &gone_filter), ("kept", &kept_filter)] {
        make(
            &c,
            &token,
            "/api/alert-rules",
            json!({"name": name, "metric": "process.absent", "process": filter, "for_secs": 1, "channels": ["hook"]}),
        )
        .await;
    }
    make(
        &c,
        &token,
        "/api/silences",
        json!({"rule": "kept", "ends_at": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
               "comment": "maintenance"}),
    )
    .await;

    let mut busy = Busy(
        Command::new("sh")
            .arg("-c")
            .arg(format!("while :; do :; done; true {busy_marker}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let busy_pid = busy.0.id();
    let (t, cc) = (&token, &c);
    assert!(
        eventually(Duration::from_secs(60), async || alert_states(cc, t, "busy").await == ["firing"]).await,
        "the busy child fires: {} {:?}",
        c.get("/api/alerts", &token).await.1,
        c.get("/api/process-snapshots/latest/", &token).await.1[0]["processes"].as_array().map(|ps| ps
            .iter()
            .filter(|p| p["pid"] == busy_pid)
            .cloned()
            .collect::<Vec<_>>())
    );
    assert!(
        eventually(Duration::from_secs(30), async || receiver.statuses("busy") == ["firing"]).await,
        "delivered on the second attempt: {:?}",
        receiver.messages()
    );
    let process = receiver.messages()[0]["alerts"][0]["labels"]["process"].as_str().unwrap().to_owned();
    assert!(process.ends_with(&format!("({busy_pid})")), "{process}");
    let busy_attempts = async || -> Vec<(u64, String)> {
        let (_, deliveries) = cc.get("/api/alerts/deliveries", t).await;
        deliveries
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["rule"] == "busy")
            .map(|d| (d["attempt"].as_u64().unwrap(), d["result"].as_str().unwrap().to_owned()))
            .collect()
    };
    let expected = [(2, "delivered".to_owned()), (1, "failed".to_owned())];
    assert!(
        eventually(Duration::from_secs(10), async || busy_attempts().await == expected).await,
        "every attempt recorded, newest first: {:?}",
        busy_attempts().await
    );
    let (_, deliveries) = c.get("/api/alerts/deliveries", &token).await;
    let failed = deliveries.as_array().unwrap().iter().find(|d| d["result"] == "failed").unwrap();
    assert!(failed["error"].as_str().unwrap().contains("500"), "{failed}");

    busy.kill();
    assert!(
        eventually(Duration::from_secs(30), async || receiver.statuses("busy") == ["firing", "resolved"]).await,
        "killing it resolves it: {:?}",
        receiver.messages()
    );

    assert!(receiver.statuses("gone").is_empty() && receiver.statuses("kept").is_empty(), "both are there");
    drop(gone);
    drop(kept);
    assert!(
        eventually(Duration::from_secs(30), async || receiver.statuses("gone") == ["firing"]).await,
        "process.absent fires when the child exits: {:?}",
        receiver.messages()
    );
    let gone_alert =
        &receiver.messages().into_iter().find(|m| m["alerts"][0]["labels"]["alertname"] == "gone").unwrap();
    assert_eq!(gone_alert["alerts"][0]["labels"]["process"], gone_filter.as_str());
    assert!(
        eventually(Duration::from_secs(30), async || alert_states(cc, t, "kept").await == ["firing"]).await,
        "the silenced rule fires all the same"
    );
    let (t, cc) = (&token, &c);
    assert!(
        eventually(Duration::from_secs(10), async || {
            cc.get("/api/alerts/deliveries", t)
                .await
                .1
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["rule"] == "kept" && d["result"] == "silenced")
        })
        .await
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(receiver.statuses("kept").is_empty(), "the silence held it back");
}

/// Bad rules and channels are refused naming the field, and nothing is stored; secrets
/// never come back; viewers read but do not write; the `--alerts` file's rules are
/// read-only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_by_field_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alerts.toml");
    std::fs::write(
        &file,
        "[[rules]]\nname = \"from-file\"\nmetric = \"host.cpu_percent\"\nthreshold = 99.5\nfor_secs = 60\n",
    )
    .unwrap();
    let c = Collector::start(dir.path(), &["--no-local", "--alerts", file.to_str().unwrap()]);
    let token = c.admin_token().await;
    let viewer = c.login("viewer", &new_user(dir.path(), "viewer", "viewer")).await;
    let receiver = Receiver::start(0).await;
    let secret_url = format!("{}?secret=s3cr3t-part", receiver.url);
    make(
        &c,
        &token,
        "/api/alert-channels",
        json!({"name": "hook", "kind": "webhook", "url": secret_url, "token": "tok-3141"}),
    )
    .await;

    let rule = |patch: Value| {
        let mut r = json!({"name": "r", "metric": "host.cpu_percent", "threshold": 90, "channels": ["hook"]});
        for (k, v) in patch.as_object().unwrap() {
            r[k] = v.clone();
        }
        r
    };
    let cases = [
        (rule(json!({"metric": "host.cpu"})), "metric"),
        (rule(json!({"threshold": "high"})), "threshold"),
        (rule(json!({"channels": ["hook", "nowhere"]})), "channels[1]"),
        (rule(json!({"metric": "process.absent", "threshold": null})), "process"),
        (rule(json!({"process": "cpu>lots", "metric": "process.count"})), "process"),
        (rule(json!({"clear": 95})), "clear"),
        (rule(json!({"metric": "host.disk_percent", "mount": "home/"})), "mount"),
        (rule(json!({"metric": "host.disk_percent", "mount": "/a/../b"})), "mount"),
        (rule(json!({"mount": "/"})), "mount"),
        (rule(json!({"metric": "host.temperature", "sensor": ""})), "sensor"),
        (rule(json!({"treshold": 3})), "treshold"),
        (rule(json!({"name": "from-file"})), ""),
    ];
    for (body, field) in cases {
        let (status, answer) = c.post("/api/alert-rules", &token, Some(body.clone())).await;
        if field.is_empty() {
            assert_eq!(status, 409, "{body}: {answer}");
        } else {
            assert_eq!(status, 422, "{body}: {answer}");
            assert_eq!(answer["field"], field, "{body}: {answer}");
        }
    }
    let (_, rules) = c.get("/api/alert-rules", &viewer).await;
    assert_eq!(rules.as_array().unwrap().len(), 1, "nothing stored: {rules}");
    assert_eq!(rules[0]["name"], "from-file");
    assert_eq!(rules[0]["read_only"], true);
    assert_eq!(delete(&c, "/api/alert-rules/from-file", &token).await, 409);

    // A channel pointing at the collector itself, one that is not http, an unknown kind.
    let own = c.url("/api/health");
    for (body, field) in [
        (json!({"name": "self", "kind": "webhook", "url": own}), "url"),
        (json!({"name": "self", "kind": "webhook", "url": own.replace("127.0.0.1", "localhost")}), "url"),
        (json!({"name": "ftp", "kind": "webhook", "url": "ftp://example.org/"}), "url"),
        (json!({"name": "pager", "kind": "pager", "url": "https://example.org/"}), "kind"),
    ] {
        let (status, answer) = c.post("/api/alert-channels", &token, Some(body.clone())).await;
        assert_eq!((status, answer["field"].as_str()), (422, Some(field)), "{body}: {answer}");
    }
    // Secrets never come back.
    let (status, channels) = c.get("/api/alert-channels", &viewer).await;
    assert_eq!(status, 200);
    assert_eq!(channels.as_array().unwrap().len(), 1, "{channels}");
    let shown = channels.to_string();
    assert!(!shown.contains("s3cr3t") && !shown.contains("tok-3141") && !shown.contains("/hook"), "{shown}");
    assert_eq!(channels[0]["token_set"], true);
    // A PUT with the masked URL and no token keeps both.
    let (status, _) = put(&c, "/api/alert-channels/hook", &token, channels[0].clone()).await;
    assert_eq!(status, 200);
    let (status, answer) = c.post("/api/alert-channels/hook/test", &token, None).await;
    assert_eq!(status, 200, "{answer}");
    assert!(receiver.messages()[0]["alerts"][0]["labels"]["alertname"] == "procyon-test");

    // Viewers read, never write.
    assert_eq!(c.post("/api/alert-rules", &viewer, Some(rule(json!({})))).await.0, 403);
    assert_eq!(c.post("/api/alert-channels/hook/test", &viewer, None).await.0, 403);
    assert_eq!(c.get("/api/alerts", &viewer).await.0, 200);

    // A channel no one answers: the test says so, on `url`.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/", dead.local_addr().unwrap());
    drop(dead);
    make(&c, &token, "/api/alert-channels", json!({"name": "dead", "kind": "slack", "url": dead_url})).await;
    let (status, answer) = c.post("/api/alert-channels/dead/test", &token, None).await;
    assert_eq!((status, answer["field"].as_str()), (422, Some("url")), "{answer}");

    // A channel in use cannot go; a silence needs a rule or host and a future end.
    make(&c, &token, "/api/alert-rules", rule(json!({}))).await;
    assert_eq!(delete(&c, "/api/alert-channels/hook", &token).await, 409);
    let (status, answer) = c.post("/api/silences", &token, Some(json!({"ends_at": "2099-01-01T00:00:00Z"}))).await;
    assert_eq!((status, answer["field"].as_str()), (422, Some("rule")));
    let (status, answer) =
        c.post("/api/silences", &token, Some(json!({"rule": "r", "ends_at": "2001-01-01T00:00:00Z"}))).await;
    assert_eq!((status, answer["field"].as_str()), (422, Some("ends_at")));
    assert_eq!(c.get("/api/silences", &viewer).await.1, json!([]));
    // Changes are audited.
    let (_, audit) = c.get("/api/audit", &token).await;
    assert!(audit.as_array().unwrap().iter().any(|e| e["action"] == "alert_rule"), "{audit}");
    drop(c);

    // A bad file stops the start, naming the rule and the field.
    std::fs::write(&file, "[[rules]]\nname = \"bad\"\nmetric = \"host.cpu_percent\"\n").unwrap();
    let out = Command::new(common::collector::BIN)
        .args(["serve", "--no-local", "--bind", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .arg("--alerts")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("bad") && stderr.contains("threshold"), "{stderr}");
}

/// Debian's Alertmanager on loopback receives a test notification and a real alert
/// through its API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_alertmanager_receives_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let bin = ["/usr/bin/prometheus-alertmanager", "/usr/bin/alertmanager"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("prometheus-alertmanager is not installed: scripts/deps.sh test");
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(&config, "route:\n  receiver: none\nreceivers:\n  - name: none\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let am_url = format!("http://127.0.0.1:{port}");
    let am = Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.path().join("am").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(am);
    let http = reqwest::Client::new();
    let am_alerts = async || -> Vec<Value> {
        match http.get(format!("{am_url}/api/v2/alerts")).send().await {
            Ok(r) if r.status().is_success() => r.json::<Vec<Value>>().await.unwrap_or_default(),
            _ => Vec::new(),
        }
    };
    let up = async || http.get(format!("{am_url}/-/ready")).send().await.is_ok_and(|r| r.status().is_success());
    assert!(eventually(Duration::from_secs(30), up).await, "alertmanager started");

    let data = dir.path().join("collector");
    let c = Collector::start(&data, &["--interval", "0.5"]);
    let token = c.admin_token().await;
    make(&c, &token, "/api/alert-channels", json!({"name": "am", "kind": "alertmanager", "url": am_url})).await;
    let (status, answer) = c.post("/api/alert-channels/am/test", &token, None).await;
    assert_eq!(status, 200, "{answer}");
    let named = |alerts: &[Value], name: &str| alerts.iter().any(|a| a["labels"]["alertname"] == name);
    assert!(named(&am_alerts().await, "procyon-test"), "{:?}", am_alerts().await);

    let am_marker = marker("am");
    let watched = Sleeper::start(&am_marker);
    let filter = format!("cmd:{am_marker}");
    make(
        &c,
        &token,
        "/api/alert-rules",
        json!({"name": "worker gone", "metric": "process.absent", "process": filter, "severity": "critical",
               "channels": ["am"]}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!named(&am_alerts().await, "worker gone"));
    drop(watched);
    assert!(
        eventually(Duration::from_secs(30), async || named(&am_alerts().await, "worker gone")).await,
        "{:?}",
        am_alerts().await
    );
    let alert = am_alerts().await.into_iter().find(|a| a["labels"]["alertname"] == "worker gone").unwrap();
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["status"]["state"], "active");
    assert!(alert["annotations"]["summary"].as_str().unwrap().contains("no process matches"));
}

/// A child that starts listening on a port fires `host.new_listening_port` (labelled
/// with the port and the process), once; its exit resolves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_starts_listening_fires_a_new_listening_port() {
    use std::io::{BufRead, Write};
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(0).await;
    let c = Collector::start(dir.path(), &["--interval", "0.5"]);
    let token = c.admin_token().await;
    make(&c, &token, "/api/alert-channels", json!({"name": "hook", "kind": "webhook", "url": receiver.url})).await;
    let tag = marker("listen");
    make(
        &c,
        &token,
        "/api/alert-rules",
        json!({"name": "new port", "metric": "host.new_listening_port", "process": format!("cmd:{tag}"),
               "for_secs": 600, "channels": ["hook"]}),
    )
    .await;
    // It listens only when told, once the collector has seen it without the socket.
    let script = "import socket, sys\n\
                  sys.stdin.readline()\n\
                  s = socket.socket()\n\
                  s.bind(('127.0.0.1', 0))\n\
                  s.listen()\n\
                  print(s.getsockname()[1], flush=True)\n\
                  sys.stdin.readline()\n";
    let mut child = Busy(
        Command::new("python3")
            .args(["-c", script, &tag])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let (t, cc) = (&token, &c);
    let seen = async || {
        let latest = cc.get("/api/process-snapshots/latest/", t).await.1;
        latest[0]["processes"].as_array().is_some_and(|ps| ps.iter().any(|p| p["pid"] == pid))
    };
    assert!(eventually(Duration::from_secs(30), seen).await, "the collector sees the child");
    let mut stdin = child.0.stdin.take().unwrap();
    writeln!(stdin, "listen").unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port: u16 = line.trim().parse().unwrap();

    assert!(
        eventually(Duration::from_secs(30), async || receiver.statuses("new port") == ["firing"]).await,
        "a new listening port fires: {:?} {}",
        receiver.messages(),
        c.get("/api/alerts", &token).await.1
    );
    let message =
        receiver.messages().into_iter().find(|m| m["alerts"][0]["labels"]["alertname"] == "new port").unwrap();
    let label = message["alerts"][0]["labels"]["process"].as_str().unwrap().to_owned();
    assert!(label.starts_with(&format!("port {port} (python")), "names the port and the process: {label}");
    assert!(message["alerts"][0]["annotations"]["summary"].as_str().unwrap().contains(&format!("port {port}")));
    // Still listening a few snapshots later: no second notification.
    let (_, before) = c.get("/api/process-snapshots/latest/", &token).await;
    let newer = async || cc.get("/api/process-snapshots/latest/", t).await.1[0]["taken_at"] != before[0]["taken_at"];
    assert!(eventually(Duration::from_secs(30), newer).await);
    assert_eq!(receiver.statuses("new port"), ["firing"], "once");
    assert_eq!(alert_states(&c, &token, "new port").await, ["firing"]);

    drop(stdin);
    child.kill();
    assert!(
        eventually(Duration::from_secs(30), async || receiver.statuses("new port") == ["firing", "resolved"]).await,
        "the socket gone resolves it: {:?}",
        receiver.messages()
    );
    assert_eq!(alert_states(&c, &token, "new port").await, ["resolved"]);
}
