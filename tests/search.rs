//! Fleet-wide process search (`GET /api/processes?q=`) against a real collector and two
//! real agents that see different processes: one sees this machine, the other runs in
//! a PID namespace of its own (`unshare --pid --mount-proc`, which takes root or
//! CAP_SYS_ADMIN) and sees only itself. A marker process of this test is then on the
//! first host only, and the search must say so.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::collector::{Collector, agent_bin, new_key};
use common::{Sleeper, marker};
use serde_json::Value;

/// An agent, killed when dropped.
struct Agent(Child);

impl Agent {
    /// `procyon-agent` reporting as `hostname`, behind `wrapper` (a command and its
    /// arguments that run the agent, e.g. in a namespace).
    fn start(wrapper: &[&str], collector: &str, key: &Path, hostname: &str, spool: &Path) -> Agent {
        let bin = agent_bin();
        let (program, args) = match wrapper.split_first() {
            Some((program, args)) => (PathBuf::from(program), args.iter().map(|a| a.to_string()).collect::<Vec<_>>()),
            None => (bin.clone(), Vec::new()),
        };
        let mut command = Command::new(program);
        command.args(args);
        if !wrapper.is_empty() {
            command.arg(&bin);
        }
        let child = command
            .args(["--collector", collector, "--hostname", hostname, "--interval", "0.5", "--api-key-file"])
            .arg(key)
            .arg("--spool")
            .arg(spool)
            .env("PROCYON_CONFIG", "/dev/null")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(spool.with_extension("log")).unwrap())
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
    let path = dir.join("fleet.key");
    std::fs::write(&path, key).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Whether this machine lets the test make a PID namespace.
fn can_unshare_pid() -> bool {
    Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The hosts of a search's answer, with the pids found on each.
fn found(answer: &Value) -> Vec<(String, Vec<u64>)> {
    answer["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let pids = h["processes"].as_array().unwrap().iter().map(|p| p["pid"].as_u64().unwrap()).collect();
            (h["hostname"].as_str().unwrap().to_owned(), pids)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_search_finds_a_process_on_the_host_that_runs_it_only() {
    if !can_unshare_pid() {
        assert!(
            std::env::var_os("CI").is_none(),
            "this test needs a PID namespace (`unshare --pid --mount-proc`: root or CAP_SYS_ADMIN)"
        );
        eprintln!("skipped: this test needs a PID namespace (`unshare --pid --mount-proc`: root or CAP_SYS_ADMIN)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let c = Collector::start(&data, &["--no-local"]);
    let token = c.admin_token().await;
    let key = key_file(dir.path(), &new_key(&data, "fleet", None));
    let tag = marker("search");
    let sleeper = Sleeper::start(&tag);

    let _outside = Agent::start(&[], &c.base, &key, "fleet-a", &dir.path().join("spool-a"));
    // `--kill-child`: the agent is unshare's child, and must end with it when dropped.
    let _inside = Agent::start(
        &["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"],
        &c.base,
        &key,
        "fleet-b",
        &dir.path().join("spool-b"),
    );

    // Both hosts report, and the namespaced one sees only itself.
    let search = |q: String| {
        let c = &c;
        let token = token.clone();
        async move {
            let (status, body) = c.get(&format!("/api/processes?q={}", urlencode(&q)), &token).await;
            assert_eq!(status, 200, "{q}: {}", short(&body));
            body
        }
    };
    let started = Instant::now();
    loop {
        let (_, hosts) = c.get("/api/hosts/", &token).await;
        let reported = hosts.as_array().is_some_and(|h| h.len() == 2);
        if reported && found(&search(tag.clone()).await).len() == 1 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "both hosts did not report: {}", short(&hosts));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The marker's shell is found on fleet-a only, as the one process with its command line.
    let answer = search(tag.clone()).await;
    assert_eq!(found(&answer), [("fleet-a".to_owned(), vec![u64::from(sleeper.pid())])], "{}", short(&answer));
    assert_eq!(
        (answer["matched"].as_u64(), answer["hosts_searched"].as_u64()),
        (Some(1), Some(2)),
        "{}",
        short(&answer)
    );
    assert_eq!(answer["truncated"], false);
    let host = &answer["hosts"][0];
    assert_eq!(host["online"], true);
    assert!(host["snapshot_id"].as_i64().unwrap() > 0 && host["host_id"].as_i64().unwrap() > 0);

    // host: narrows before reading; a pattern, and its negation.
    assert!(found(&search(format!("{tag} host:fleet-b")).await).is_empty());
    assert_eq!(found(&search(format!("{tag} host:FLEET-*")).await).len(), 1);
    assert!(found(&search(format!("{tag} -host:fleet-a")).await).is_empty());
    assert_eq!(search(format!("{tag} host:fleet-b")).await["hosts_searched"], 1);

    // The namespaced agent sees itself as pid 1, and only itself.
    let inside = search("host:fleet-b".into()).await;
    let names: Vec<&str> =
        inside["hosts"][0]["processes"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(names.iter().all(|n| n.starts_with("procyon-agent")), "{}", short(&inside));

    // limit cuts the answer and says where to go on.
    let cut = search("procyon-agent".into()).await;
    assert!(cut["matched"].as_u64().unwrap() >= 2, "{}", short(&cut));
    let (status, one) = c.get("/api/processes?q=procyon-agent&limit=1", &token).await;
    assert_eq!(status, 200);
    assert_eq!((one["returned"].as_u64(), one["truncated"].as_bool()), (Some(1), Some(true)), "{}", short(&one));
    assert_eq!(one["next_hostname"], "fleet-b", "{}", short(&one));
    let (_, rest) = c.get("/api/processes?q=procyon-agent&limit=1&from_hostname=fleet-b", &token).await;
    assert_eq!(found(&rest).iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>(), ["fleet-b"], "{}", short(&rest));

    // Bad queries are refused, naming the word and the field.
    for (q, word) in [("cpu%3Elots", "cpu>lots"), ("port:https", "port:https"), ("host:", "host:")] {
        let (status, body) = c.get(&format!("/api/processes?q={q}"), &token).await;
        assert_eq!(status, 422, "{q}: {}", short(&body));
        assert_eq!(body["field"], "q", "{}", short(&body));
        assert!(body["message"].as_str().unwrap().contains(word), "{}", short(&body));
    }
    for limit in ["0", "1001", "x"] {
        let (status, body) = c.get(&format!("/api/processes?limit={limit}"), &token).await;
        assert_eq!(status, 422, "{limit}: {}", short(&body));
    }
    let (status, _) = c.get("/api/processes?q=x", "not-a-token").await;
    assert_eq!(status, 401);
    drop(sleeper);
}

/// Percent-encodes a query value.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A JSON value cut to a readable length for a failure message.
fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 1_500 { format!("{}…", text.chars().take(1_500).collect::<String>()) } else { text }
}
