//! `/metrics` end to end: a real collector with a real agent and a second host from an
//! upload, its output checked by `promtool`, scraped by a real Prometheus with a key of
//! scope metrics, the group limit with a thousand process names, and who is refused.
//!
//! Needs `promtool` and `prometheus` (Debian's `prometheus` package; `scripts/deps.sh
//! test` installs it).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::collector::{Collector, agent_bin, cli, new_key, new_user};
use serde_json::{Value, json};

/// A key of scope metrics from `procyon apikey create`.
fn metrics_key(data: &Path, name: &str) -> String {
    let out = cli(data, &["apikey", "create", "--name", name, "--scope", "metrics"], None);
    assert!(out.contains("scope metrics"), "{out}");
    out.lines().last().unwrap().trim().to_owned()
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real agent reporting as `hostname` every second, with `extra` flags.
fn start_agent(c: &Collector, dir: &Path, key: &str, hostname: &str, extra: &[&str]) -> Killed {
    use std::os::unix::fs::PermissionsExt;
    let key_file = dir.join(format!("{hostname}.key"));
    std::fs::write(&key_file, key).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let child = Command::new(agent_bin())
        .env("PROCYON_CONFIG", "/dev/null")
        .args(["--collector", &c.base, "--hostname", hostname, "--interval", "1", "--api-key-file"])
        .arg(&key_file)
        .arg("--spool")
        .arg(dir.join(format!("{hostname}.spool")))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Killed(child)
}

/// A short-format upload of `hostname` with `names` processes of distinct names.
fn upload_with_names(hostname: &str, names: usize) -> String {
    let processes: Vec<Value> = (0..names)
        .map(|i| {
            json!({ "pid": i + 2, "name": format!("group-{i:04}"), "cpu": (i % 97) as f64 / 10.0,
                         "memory": format!("{}MB", 1 + i % 50), "parent_pid": null })
        })
        .collect();
    json!({ "hostname": hostname, "snapshot_time": chrono::Utc::now(), "processes": processes }).to_string()
}

async fn scrape(c: &Collector, authorization: &str, accept: Option<&str>) -> (u16, String, String) {
    let mut request = c.http.get(c.url("/metrics")).header("Authorization", authorization);
    if let Some(a) = accept {
        request = request.header("Accept", a);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let content_type = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, content_type, r.text().await.unwrap())
}

/// The value of the one sample of `name` whose labels contain `labels`.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
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
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("timed out waiting for {what}");
}

/// `promtool check metrics` on `text`: its complaints, if any.
fn promtool(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package) is installed");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

/// A port free on loopback now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_two_hosts_with_a_metrics_key_and_promtool_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let c = Collector::start(&data, &["--no-local"]);
    let upload_key = new_key(&data, "fleet", None);
    let scrape_key = metrics_key(&data, "prom");
    let bearer = format!("Bearer {scrape_key}");

    let agent_metrics = format!("127.0.0.1:{}", free_port());
    let _agent = start_agent(&c, dir.path(), &upload_key, "metrics-agent-1", &["--metrics-listen", &agent_metrics]);
    // The second host: a seed-format upload with a thousand distinct process names.
    let (status, body) = c.upload(&upload_key, upload_with_names("metrics-upload-2", 1000)).await;
    assert_eq!(status, 201, "{body}");
    wait_until(Duration::from_secs(60), "the agent's host on /metrics", || async {
        sample(&scrape(&c, &bearer, None).await.2, "procyon_host_online", "metrics-agent-1").is_some()
    })
    .await;

    let (status, content_type, text) = scrape(&c, &bearer, None).await;
    assert_eq!(status, 200, "{text}");
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    promtool(&text).unwrap_or_else(|e| panic!("promtool check metrics: {e}\n{text}"));
    for host in ["metrics-agent-1", "metrics-upload-2"] {
        let labels = format!("hostname=\"{host}\"");
        assert!(sample(&text, "procyon_host_cpu_usage_ratio", &labels).is_some(), "{host}: {text}");
        assert_eq!(sample(&text, "procyon_host_online", &labels), Some(1.0), "{host}");
        assert!(sample(&text, "procyon_host_last_snapshot_age_seconds", &labels).is_some());
    }
    let agent = "hostname=\"metrics-agent-1\"";
    assert!(sample(&text, "procyon_host_cpu_core_usage_ratio", agent).is_some());
    assert!(sample(&text, "procyon_host_memory_total_bytes", agent).is_some_and(|v| v > 0.0));
    assert!(sample(&text, "procyon_host_network_receive_bytes_total", agent).is_some());
    assert!(sample(&text, "procyon_host_processes", agent).is_some_and(|v| v > 0.0));
    assert!(text.lines().any(|l| l.starts_with("procyon_agents_connected 1")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("procyon_snapshots_ingested_total ")));
    assert!(text.contains("procyon_ingest_duration_seconds_bucket{le="));
    assert!(text.contains("procyon_build_info{program=\"procyon\""));
    assert!(!text.contains("pid="), "never a pid label");
    // The group limit: 20 of the 1,000 names, and the rest counted.
    let upload = "hostname=\"metrics-upload-2\"";
    let groups =
        text.lines().filter(|l| l.starts_with("procyon_process_group_processes{") && l.contains(upload)).count();
    assert_eq!(groups, 20);
    assert_eq!(sample(&text, "procyon_host_process_groups_left_out", upload), Some(980.0));

    // OpenMetrics when asked for, ending in # EOF.
    let (status, content_type, open) = scrape(&c, &bearer, Some("application/openmetrics-text;version=1.0.0")).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    assert!(open.ends_with("# EOF\n"));

    // A real Prometheus on loopback scrapes it with the key every second.
    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let target = c.base.trim_start_matches("http://");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: procyon\n    \
         metrics_path: /metrics\n    authorization:\n      type: Bearer\n      credentials: {scrape_key}\n    \
         static_configs:\n      - targets: ['{target}']\n"
    );
    std::fs::write(prom_dir.join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", prom_dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", prom_dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(prom_dir.join("log")).unwrap())
            .spawn()
            .expect("prometheus (Debian's prometheus package) is installed"),
    );
    let query = |q: &'static str| {
        let http = c.http.clone();
        async move {
            let r =
                http.get(format!("http://127.0.0.1:{port}/api/v1/query")).query(&[("query", q)]).send().await.ok()?;
            let body: Value = r.json().await.ok()?;
            body["data"]["result"].as_array().cloned()
        }
    };
    wait_until(Duration::from_secs(60), "Prometheus to scrape the collector (up == 1)", || async {
        query("up{job=\"procyon\"} == 1").await.is_some_and(|r| r.len() == 1)
    })
    .await;
    wait_until(Duration::from_secs(30), "a CPU series for each host in Prometheus", || async {
        let Some(series) = query("procyon_host_cpu_usage_ratio").await else { return false };
        let mut hosts: Vec<String> =
            series.iter().filter_map(|s| s["metric"]["hostname"].as_str().map(str::to_owned)).collect();
        hosts.sort();
        hosts == ["metrics-agent-1", "metrics-upload-2"]
    })
    .await;
    let log = std::fs::read_to_string(prom_dir.join("log")).unwrap_or_default();
    assert!(!log.contains("level=error"), "Prometheus logged errors:\n{log}");

    // The agent serves the same host families for its own machine, without a key.
    let r = c.http.get(format!("http://{agent_metrics}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let own = r.text().await.unwrap();
    promtool(&own).unwrap_or_else(|e| panic!("promtool check metrics on the agent: {e}\n{own}"));
    for name in ["procyon_host_cpu_usage_ratio", "procyon_host_processes", "procyon_process_group_processes"] {
        assert!(sample(&own, name, agent).is_some(), "{name} on the agent:\n{own}");
    }
    assert!(own.contains("procyon_build_info{program=\"procyon-agent\""));
    let r = c
        .http
        .get(format!("http://{agent_metrics}/metrics"))
        .header("Accept", "application/openmetrics-text")
        .send()
        .await
        .unwrap();
    assert!(r.text().await.unwrap().ends_with("# EOF\n"));
    let r = c.http.get(format!("http://{agent_metrics}/")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_metrics_keys_and_admins_read_metrics_and_metrics_keys_read_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let c = Collector::start(&data, &["--no-local", "--metrics-groups", "5"]);
    let admin = c.admin_token().await;
    let upload_key = new_key(&data, "fleet", None);
    let scrape_key = metrics_key(&data, "prom");
    let viewer = c.login("vera", &new_user(&data, "vera", "viewer")).await;
    let (status, _) = c.upload(&upload_key, upload_with_names("limits-1", 50)).await;
    assert_eq!(status, 201);

    // Both ways of sending the key read it; so does an admin.
    for auth in [format!("Bearer {scrape_key}"), format!("Api-Key {scrape_key}"), format!("Bearer {admin}")] {
        let (status, _, text) = scrape(&c, &auth, None).await;
        assert_eq!(status, 200, "{auth}: {text}");
        assert_eq!(sample(&text, "procyon_host_process_groups_left_out", "limits-1"), Some(45.0), "--metrics-groups");
    }
    // Upload keys and viewers may not.
    for auth in [format!("Api-Key {upload_key}"), format!("Bearer {upload_key}"), format!("Bearer {viewer}")] {
        let (status, _, text) = scrape(&c, &auth, None).await;
        assert_eq!(status, 403, "{auth}: {text}");
        assert!(text.contains("scope metrics"), "the refusal says what works: {text}");
    }
    let (status, _, _) = scrape(&c, "Bearer pk_made-up", None).await;
    assert_eq!(status, 401);
    // The scraping key reads nothing else and uploads nothing.
    assert!(matches!(c.get("/api/hosts/", &scrape_key).await.0, 401 | 403));
    let r = c.http.get(c.url("/api/hosts/")).header("Authorization", format!("Api-Key {scrape_key}")).send().await;
    assert_eq!(r.unwrap().status(), 403);
    let (status, body) = c.upload(&scrape_key, upload_with_names("limits-2", 1)).await;
    assert_eq!(status, 403, "{body}");
    // Nothing under /metrics is ever the dashboard's page.
    for path in ["/metrics/", "/metrics/anything"] {
        let r = c.http.get(c.url(path)).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/json"), "{path}");
    }
    // Keys list their scope.
    let (status, keys) = c.get("/api/keys", &admin).await;
    assert_eq!(status, 200);
    let scopes: Vec<&str> = keys.as_array().unwrap().iter().map(|k| k["scope"].as_str().unwrap()).collect();
    assert_eq!(scopes, ["upload", "metrics"]);
    // A metrics key bound to a host makes no sense, and is refused.
    let (status, body) =
        c.post("/api/keys", &admin, Some(json!({ "name": "bad", "scope": "metrics", "hostname": "limits-1" }))).await;
    assert_eq!(status, 422, "{body}");
    let out = Command::new(common::collector::BIN)
        .args(["apikey", "create", "--name", "bad", "--scope", "metrics", "--host", "limits-1", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--host does not apply"));
    let out = Command::new(common::collector::BIN)
        .args(["apikey", "create", "--name", "bad", "--scope", "read", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("expected upload or metrics"));
}
