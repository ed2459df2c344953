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

/// Two collectors on one PostgreSQL, the agent on B: a rule made on A is in force on
/// B at once, and `host.offline` fires once and resolves once for the fleet, not once
/// per collector (every collector sees every host go silent; only the leader says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collectors_sharing_a_database_fire_host_offline_once() {
    let Some(url) = common::postgres::database() else { return };
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(0).await;
    let (a_data, b_data) = (dir.path().join("a"), dir.path().join("b"));
    let a = Collector::start(&a_data, &["--no-local", "--database", &url]);
    let token = a.admin_token().await;
    let b = Collector::start(&b_data, &["--no-local", "--database", &url]);
    let host = "alerts-shared-host";
    make(&a, &token, "/api/alert-channels", json!({"name": "hook", "kind": "webhook", "url": receiver.url})).await;
    make(
        &a,
        &token,
        "/api/alert-rules",
        json!({"name": "shared-offline", "metric": "host.offline", "host": host, "for_secs": 5,
               "severity": "warning", "channels": ["hook"]}),
    )
    .await;
    // B reads what A changed, without a restart.
    let (t, bb) = (&token, &b);
    assert!(
        eventually(Duration::from_secs(15), async || bb
            .get("/api/alert-rules", t)
            .await
            .1
            .to_string()
            .contains("shared-offline"))
        .await,
        "a rule made on A is in force on B"
    );

    let args = ["apikey", "create", "--name", "shared", "--host", host, "--database", &url];
    let key = common::collector::cli(&a_data, &args, None).lines().last().unwrap().trim().to_owned();
    let key = key_file(dir.path(), &key);
    let spool = dir.path().join("spool");
    let mut agent = Agent::start(&b.base, &key, host, &spool);
    let aa = &a;
    assert!(
        eventually(Duration::from_secs(30), async || aa.get("/api/hosts/", t).await.1.to_string().contains(host)).await,
        "A lists B's agent's host"
    );
    agent.kill();
    assert!(
        eventually(Duration::from_secs(30), async || receiver.statuses("shared-offline") == ["firing"]).await,
        "firing after the agent stopped: {:?}",
        receiver.messages()
    );
    // Both collectors had time to say it (each ticks once a second).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(receiver.statuses("shared-offline"), ["firing"], "once for the fleet");

    let _agent = Agent::start(&b.base, &key, host, &spool);
    assert!(
        eventually(Duration::from_secs(30), async || receiver.statuses("shared-offline") == ["firing", "resolved"])
            .await,
        "resolved when it came back: {:?}",
        receiver.messages()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(receiver.statuses("shared-offline"), ["firing", "resolved"], "resolved once");
    for c in [&a, &b] {
        assert_eq!(alert_states(c, &token, "shared-offline").await, ["resolved"]);
    }
}
/// A local SMTP server: Debian's aiosmtpd (`python3-aiosmtpd`) printing every mail it
/// gets, run with the system's own python3 (the one its package is for).
struct SmtpServer {
    child: Child,
    port: u16,
    out: Arc<Mutex<String>>,
}

impl SmtpServer {
    fn start() -> SmtpServer {
        use std::io::Read;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = Command::new("/usr/bin/python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            // Its debugging handler prints to stdout: unbuffered, so each mail shows at once.
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("/usr/bin/python3 -m aiosmtpd (Debian's python3-aiosmtpd; scripts/deps.sh test installs it)");
        let mut stdout = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "aiosmtpd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        SmtpServer { child, port, out }
    }

    /// The mails received, each as the server printed it.
    fn mails(&self) -> Vec<String> {
        let out = self.out.lock().unwrap().clone();
        out.split("---------- MESSAGE FOLLOWS ----------")
            .skip(1)
            .filter_map(|m| m.split("------------ END MESSAGE ------------").next())
            .map(str::to_owned)
            .collect()
    }

    fn subjects(&self) -> Vec<String> {
        self.mails()
            .iter()
            .filter_map(|m| m.lines().find_map(|l| l.strip_prefix("Subject: ").map(str::to_owned)))
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An email channel: its test button mails the SMTP server, a rule's firing and its
/// resolution arrive as two mails, and its password never comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_goes_to_a_local_smtp_server() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start();
    let c = Collector::start(dir.path(), &["--interval", "0.5"]);
    let token = c.admin_token().await;
    let email = json!({"host": "127.0.0.1", "port": smtp.port, "tls": "none",
                       "from": "Procyon <alerts@example.org>", "to": ["ops@example.org", "oncall@example.org"]});
    make(&c, &token, "/api/alert-channels", json!({"name": "mail", "kind": "email", "email": email})).await;

    let (status, answer) = c.post("/api/alert-channels/mail/test", &token, None).await;
    assert_eq!(status, 200, "{answer}");
    let (s, cc) = (&smtp, &c);
    assert!(eventually(Duration::from_secs(20), async || s.mails().len() == 1).await, "the test mail arrives");
    let test_mail = &smtp.mails()[0];
    assert!(test_mail.contains("procyon-test") && test_mail.contains("ops@example.org"), "{test_mail}");
    assert!(test_mail.contains("oncall@example.org"), "both recipients: {test_mail}");

    let gone_marker = marker("mailed");
    let mut gone = Sleeper::start(&gone_marker);
    make(
        &c,
        &token,
        "/api/alert-rules",
        json!({"name": "mailed", "metric": "process.absent", "process": format!("cmd:{gone_marker}"),
               "for_secs": 1, "severity": "critical", "channels": ["mail"]}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(smtp.mails().len(), 1, "nothing fires while the child runs");
    let _ = gone.child.kill();
    let _ = gone.child.wait();
    assert!(
        eventually(Duration::from_secs(30), async || s
            .subjects()
            .iter()
            .any(|m| m.starts_with("[FIRING:critical] mailed")))
        .await,
        "the firing mail: {:?}",
        smtp.subjects()
    );
    let _back = Sleeper::start(&gone_marker);
    assert!(
        eventually(Duration::from_secs(30), async || s
            .subjects()
            .iter()
            .any(|m| m.starts_with("[RESOLVED:critical] mailed")))
        .await,
        "the resolved mail: {:?}",
        smtp.subjects()
    );
    let resolved = smtp.mails().into_iter().find(|m| m.contains("[RESOLVED:critical] mailed")).unwrap();
    assert!(resolved.contains("resolved at:"), "{resolved}");
    let t = &token;
    assert!(
        eventually(Duration::from_secs(10), async || {
            let (_, d) = cc.get("/api/alerts/deliveries", t).await;
            let d = d.as_array().unwrap().clone();
            ["firing", "resolved", "test"].iter().all(|status| {
                d.iter().any(|x| x["channel"] == "mail" && x["status"] == *status && x["result"] == "delivered")
            })
        })
        .await,
        "every mail recorded as delivered"
    );

    // The password is the collector's only: answers say that one is set, never what.
    let secret = "hunter2-smtp-secret";
    let with_password = json!({"name": "mail-auth", "kind": "email", "email": {
        "host": "127.0.0.1", "port": smtp.port, "tls": "starttls", "username": "alerts", "password": secret,
        "from": "alerts@example.org", "to": ["ops@example.org"]}});
    let (status, made) = c.post("/api/alert-channels", &token, Some(with_password)).await;
    assert_eq!(status, 201, "{made}");
    let (_, listed) = c.get("/api/alert-channels", &token).await;
    for shown in [&made, &listed] {
        assert!(!shown.to_string().contains(secret), "{shown}");
    }
    let mail_auth = listed.as_array().unwrap().iter().find(|ch| ch["name"] == "mail-auth").unwrap().clone();
    assert_eq!(mail_auth["email"]["password_set"], true, "{mail_auth}");
    // Sent back as read (without the password), it keeps the stored one.
    let (status, changed) = put(&c, "/api/alert-channels/mail-auth", &token, mail_auth).await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["email"]["password_set"], true, "{changed}");
    // The server offers no STARTTLS: the test says so, naming the channel's URL field.
    let (status, answer) = c.post("/api/alert-channels/mail-auth/test", &token, None).await;
    assert_eq!(status, 422, "{answer}");
    assert!(answer.to_string().to_lowercase().contains("smtp"), "{answer}");

    // Bad email settings are refused by field; nothing is stored.
    for (body, field) in [
        (json!({"name": "m2", "kind": "email"}), "email"),
        (
            json!({"name": "m2", "kind": "email", "email": {"host": "h", "from": "nobody", "to": ["a@b.c"]}}),
            "email.from",
        ),
        (json!({"name": "m2", "kind": "email", "email": {"host": "h", "from": "a@b.c", "to": []}}), "email.to"),
        (
            json!({"name": "m2", "kind": "email", "email": {"host": "h", "from": "a@b.c", "to": ["a@b.c", "x y@z"]}}),
            "email.to[1]",
        ),
        (json!({"name": "m2", "kind": "email", "email": {"host": "", "from": "a@b.c", "to": ["a@b.c"]}}), "email.host"),
        (
            json!({"name": "m2", "kind": "email", "url": "http://x/", "email": {"host": "h", "from": "a@b.c", "to": ["a@b.c"]}}),
            "url",
        ),
        (
            json!({"name": "m2", "kind": "email", "email": {"host": "h", "tls": "ssl", "from": "a@b.c", "to": ["a@b.c"]}}),
            "email.tls",
        ),
        (json!({"name": "m2", "kind": "desktop"}), "kind"),
        (
            json!({"name": "m2", "kind": "webhook", "url": "http://127.0.0.1:9/",
                   "quiet_hours": {"start": "22:00", "end": "07:00", "time_zone": "Europe/Nowhere"}}),
            "quiet_hours.time_zone",
        ),
    ] {
        let (status, answer) = c.post("/api/alert-channels", &token, Some(body.clone())).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["field"], field, "{body}: {answer}");
    }
    let (_, listed) = c.get("/api/alert-channels", &token).await;
    assert_eq!(listed.as_array().unwrap().len(), 2, "nothing stored: {listed}");
}

/// A channel's quiet hours (in a time zone with daylight saving, ending a few seconds
/// into the test) hold a notification back: it is recorded as held, survives a restart
/// of the collector, and goes to the receiver as one summary when they end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_hold_notifications_and_send_a_summary_when_they_end() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(0).await;
    let mut c = Collector::start(dir.path(), &["--interval", "0.5"]);
    let token = c.admin_token().await;
    // Quiet from an hour ago until 40 s from now on Berlin's wall clock.
    let zone = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
    let now = jiff::Timestamp::now();
    // Whole seconds, as the quiet hours are written.
    let end_at = jiff::Timestamp::from_second((now + jiff::SignedDuration::from_secs(40)).as_second()).unwrap();
    let clock = |t: jiff::Timestamp| t.to_zoned(zone.clone()).time().strftime("%H:%M:%S").to_string();
    let quiet = json!({"start": clock(now - jiff::SignedDuration::from_secs(3600)), "end": clock(end_at),
                       "time_zone": "Europe/Berlin"});
    make(
        &c,
        &token,
        "/api/alert-channels",
        json!({"name": "night", "kind": "webhook", "url": receiver.url,
                                                    "quiet_hours": quiet}),
    )
    .await;
    let (_, listed) = c.get("/api/alert-channels", &token).await;
    assert_eq!(listed[0]["quiet_hours"], quiet, "{listed}");
    let never = marker("never-there");
    make(
        &c,
        &token,
        "/api/alert-rules",
        json!({"name": "quiet-absent", "metric": "process.absent", "process": format!("cmd:{never}"),
               "for_secs": 1, "channels": ["night"]}),
    )
    .await;
    let (t, cc) = (&token, &c);
    assert!(
        eventually(Duration::from_secs(20), async || {
            cc.get("/api/alerts/deliveries", t).await.1.as_array().unwrap().iter().any(|d| {
                d["rule"] == "quiet-absent"
                    && d["result"] == "silenced"
                    && d["error"].as_str().is_some_and(|e| e.contains("quiet hours"))
            })
        })
        .await,
        "held and recorded as held: {}",
        c.get("/api/alerts/deliveries", &token).await.1
    );
    assert_eq!(alert_states(&c, &token, "quiet-absent").await, ["firing"], "it fires all the same");
    assert!(receiver.messages().is_empty(), "nothing sent during quiet hours: {:?}", receiver.messages());

    // A restart in between loses nothing.
    assert!(c.stop());
    let c = Collector::start(dir.path(), &["--interval", "0.5"]);
    let password = std::fs::read_to_string(dir.path().join("initial-admin-password")).unwrap();
    let token = c.login("admin", password.trim()).await;
    assert!(
        jiff::Timestamp::now() < end_at,
        "the quiet hours ended before the test could check that they hold (a very slow machine)"
    );
    assert!(receiver.messages().is_empty(), "still quiet: {:?}", receiver.messages());

    let r = &receiver;
    assert!(
        eventually(Duration::from_secs(90), async || !r.messages().is_empty()).await,
        "the summary arrives when the quiet hours end"
    );
    assert!(jiff::Timestamp::now() >= end_at, "not before they end");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let messages = receiver.messages();
    assert_eq!(messages.len(), 1, "one summary: {messages:?}");
    let summary = &messages[0];
    assert_eq!(summary["version"], "4");
    assert_eq!(summary["status"], "firing");
    let alerts = summary["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{summary}");
    assert_eq!(alerts[0]["labels"]["alertname"], "quiet-absent");
    assert_eq!(alerts[0]["status"], "firing");
    let (t, cc) = (&token, &c);
    assert!(
        eventually(Duration::from_secs(10), async || {
            cc.get("/api/alerts/deliveries", t)
                .await
                .1
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["channel"] == "night" && d["status"] == "summary" && d["result"] == "delivered")
        })
        .await,
        "the summary is recorded"
    );
    // Sent once: the held notification is forgotten after it went out.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.messages().len(), 1);
}

/// Hysteresis end to end, with real processes counted: a `process.count` rule fires at
/// 3 matching children, stays firing at 2 (between `clear` and `threshold`: no
/// flapping), notifies again every `repeat_secs` while it fires, and resolves at 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_rule_holds_between_clear_and_threshold_and_repeats_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(0).await;
    let c = Collector::start(dir.path(), &["--interval", "0.5"]);
    let token = c.admin_token().await;
    make(&c, &token, "/api/alert-channels", json!({"name": "hook", "kind": "webhook", "url": receiver.url})).await;
    let crowd = marker("crowd");
    make(
        &c,
        &token,
        "/api/alert-rules",
        json!({"name": "crowd", "metric": "process.count", "process": format!("cmd:{crowd}"), "op": ">=",
               "threshold": 3, "clear": 2, "for_secs": 1, "repeat_secs": 10, "channels": ["hook"]}),
    )
    .await;
    let mut children: Vec<Sleeper> = (0..3).map(|_| Sleeper::start(&crowd)).collect();
    let r = &receiver;
    assert!(
        eventually(Duration::from_secs(30), async || r.statuses("crowd") == ["firing"]).await,
        "three children fire it: {:?}",
        receiver.messages()
    );
    drop(children.pop());
    // Two: between clear (2) and threshold (3). It stays firing; only repeats follow.
    let (t, cc) = (&token, &c);
    assert!(
        eventually(Duration::from_secs(30), async || r.statuses("crowd").len() >= 2).await,
        "repeat_secs sends it again while it fires: {:?}",
        receiver.messages()
    );
    assert!(receiver.statuses("crowd").iter().all(|s| s == "firing"), "{:?}", receiver.statuses("crowd"));
    assert_eq!(alert_states(cc, t, "crowd").await, ["firing"], "two children keep it firing");
    let repeated = &receiver.messages()[1];
    assert_eq!(repeated["alerts"][0]["startsAt"], receiver.messages()[0]["alerts"][0]["startsAt"], "the same alert");

    drop(children.pop());
    assert!(
        eventually(Duration::from_secs(30), async || r.statuses("crowd").last().is_some_and(|s| s == "resolved")).await,
        "one child resolves it: {:?}",
        receiver.messages()
    );
    let statuses = receiver.statuses("crowd");
    assert_eq!(statuses.iter().filter(|s| *s == "resolved").count(), 1, "{statuses:?}");
}
