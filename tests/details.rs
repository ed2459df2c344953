//! Process details on demand (`GET /api/hosts/{server_id}/processes/{pid}/details`)
//! of a real child process: on the collector's own machine and through an agent, its
//! threads, a file it holds open, a socket it listens on and a limit it set; a pid
//! reused or gone, an agent offline or too old, the audit rows and the rate limit.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::collector::{Collector, agent_bin, new_key, new_user};
use futures_util::{SinkExt, StreamExt};
use procyon::model::agent::{Encoding, PROTOCOL_VERSION, encode_snapshot, full_frame};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Threads the child runs: its main thread and four it starts.
const THREADS: u64 = 5;
/// The soft limit on open files the child sets itself.
const NOFILE_SOFT: u64 = 777;

/// A Python process with [`THREADS`] threads (one of them busy), a file held open, a
/// TCP socket listening on 127.0.0.1, and its open-files limit lowered. Killed when
/// dropped.
struct Holder {
    child: Child,
    port: u16,
    file: PathBuf,
}

impl Holder {
    fn start(dir: &Path) -> Holder {
        let file = dir.join("held-open.txt");
        std::fs::write(&file, "held").unwrap();
        let script = format!(
            r#"
import resource, socket, sys, threading, time
held = open(sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, ({NOFILE_SOFT}, hard))
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
stop = threading.Event()
def spin():
    while not stop.is_set():
        pass
threading.Thread(target=spin, daemon=True).start()
for _ in range(3):
    threading.Thread(target=stop.wait, daemon=True).start()
print(server.getsockname()[1], flush=True)
time.sleep(600)
"#
        );
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs (scripts/deps.sh test installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| panic!("the child said {line:?}"));
        Holder { child, port, file }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Checks the details of `holder` show what it holds.
fn check_details(details: &Value, holder: &Holder) {
    let pid = holder.pid();
    assert_eq!(details["pid"], pid, "{details}");
    assert!(details["name"].as_str().unwrap().starts_with("python"), "{details}");
    assert_eq!(details["threads_total"], THREADS, "{details}");
    let threads = details["threads"].as_array().unwrap();
    assert_eq!(threads.len() as u64, THREADS);
    assert!(threads.iter().any(|t| t["tid"] == pid), "the main thread's tid is the pid: {details}");
    for t in threads {
        assert!(t["tid"].as_u64().unwrap() > 0 && t["state"].is_string() && t["name"].is_string(), "{t}");
    }
    // The busy thread comes first and was seen using CPU over the measuring window.
    assert!(threads[0]["cpu_percent"].as_f64().unwrap() > 0.0, "{details}");

    let files = details["files"].as_array().unwrap();
    assert_eq!(details["files_total"].as_u64().unwrap(), files.len() as u64);
    let path = holder.file.to_string_lossy();
    assert!(files.iter().any(|f| f["kind"] == "file" && f["target"] == *path), "the held file: {details}");
    let listening = format!("tcp 127.0.0.1:{} LISTEN", holder.port);
    assert!(
        files.iter().any(|f| f["kind"] == "socket" && f["socket"] == *listening),
        "the listening socket `{listening}`: {details}"
    );

    let limits = details["limits"].as_array().unwrap();
    let nofile = limits.iter().find(|l| l["name"] == "Max open files").expect("Max open files");
    assert_eq!(nofile["soft"], NOFILE_SOFT, "{nofile}");
    assert!(details["memory_maps"]["count"].as_u64().unwrap() > 0);
    assert!(details["executable"].as_str().unwrap().contains("python"));
    assert!(!details["cgroups"].as_array().unwrap().is_empty());
    assert!(details["unavailable"].as_array().unwrap().is_empty(), "{details}");
    // Names only: no value of the environment travels.
    let env = details["environment_names"].as_array().unwrap();
    assert!(env.iter().any(|n| n == "PATH"), "{details}");
    assert!(!details.to_string().contains(&std::env::var("PATH").unwrap()));
}

async fn audit_rows(c: &Collector, token: &str) -> Vec<Value> {
    let (status, log) = c.get("/api/audit?limit=1000", token).await;
    assert_eq!(status, 200);
    log.as_array().unwrap().iter().filter(|e| e["action"] == "details").cloned().collect()
}

/// Waits until `pid` shows in the newest snapshot of `host`, and returns its start time.
async fn start_time(c: &Collector, token: &str, host: &str, pid: u32) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, snap) = c.get(&format!("/api/monitoring/{host}/snapshot"), token).await;
        let found = snap["processes"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["pid"] == pid))
            .and_then(|p| p["start_time"].as_str().map(str::to_owned));
        if let Some(t) = found {
            return t;
        }
        assert!(Instant::now() < deadline, "process {pid} never appeared on {host}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn details_of_a_real_child_on_the_collectors_machine() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(&dir.path().join("data"), &["--interval", "0.5"]);
    let viewer = c.login("vera", &new_user(&c.data, "vera", "viewer")).await;
    let admin = c.admin_token().await;
    let mut holder = Holder::start(dir.path());
    let pid = holder.pid();
    let url = |q: &str| format!("/api/hosts/local/processes/{pid}/details{q}");

    // A viewer may look: reading changes nothing.
    let (status, details) = c.get(&url(""), &viewer).await;
    assert_eq!(status, 200, "{details}");
    check_details(&details, &holder);

    // Named by its start time, as the snapshot shows it; another start time is a 409.
    let started = start_time(&c, &viewer, "local", pid).await;
    assert_eq!(details["start_time"], started.as_str());
    let (status, again) = c.get(&url(&format!("?start_time={started}")), &viewer).await;
    assert_eq!(status, 200, "{again}");
    let (status, reused) = c.get(&url("?start_time=2001-01-01T00:00:00Z"), &viewer).await;
    assert_eq!((status, reused["error"].as_str()), (409, Some("pid_reused")), "{reused}");
    let (status, bad) = c.get(&url("?start_time=yesterday"), &viewer).await;
    assert!((400..500).contains(&status), "{status} {bad}");

    // Gone: a 404 that says so.
    holder.kill();
    let (status, gone) = c.get(&url(""), &viewer).await;
    assert_eq!((status, gone["error"].as_str()), (404, Some("not_found")), "{gone}");
    assert!(gone["message"].as_str().unwrap().contains("gone"), "{gone}");
    let (status, _) = c.get("/api/hosts/local/processes/notapid/details", &viewer).await;
    assert_eq!(status, 404);
    let (status, _) = c.get("/api/hosts/nosuchhost/processes/1/details", &viewer).await;
    assert_eq!(status, 404);

    // Each request that reached a process is audited, with its outcome.
    let rows = audit_rows(&c, &admin).await;
    let mut outcomes: Vec<&str> = rows.iter().map(|r| r["result"].as_str().unwrap()).collect();
    outcomes.sort_unstable();
    assert_eq!(outcomes, ["not_found", "pid_reused", "success", "success"], "{rows:?}");
    assert!(rows.iter().all(|r| r["actor"] == "vera" && r["pid"] == pid));
    assert!(rows.iter().any(|r| r["process_name"].as_str().is_some_and(|n| n.starts_with("python"))));

    // At most a minute's worth per user; another user still gets theirs.
    let mut refused = None;
    for _ in 0..70 {
        let (status, answer) = c.get("/api/hosts/local/processes/4000000/details", &viewer).await;
        if status == 429 {
            refused = Some(answer);
            break;
        }
        assert_eq!(status, 404, "{answer}");
    }
    let refused = refused.expect("the rate limit was never reached");
    assert!(refused["message"].as_str().unwrap().contains("a minute"), "{refused}");
    let (status, _) = c.get("/api/hosts/local/processes/4000000/details", &admin).await;
    assert_eq!(status, 404);
}

/// An API key in a file only its owner may read.
fn key_file(dir: &Path, key: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("agent.key");
    std::fs::write(&path, key).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn details_through_an_agent_and_from_agents_that_cannot_answer() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let c = Collector::start(&data, &["--no-local"]);
    let token = c.admin_token().await;
    let key = new_key(&data, "k", None);
    // Without --allow-control: details are read-only, so they are answered all the same.
    let mut agent = Command::new(agent_bin())
        .env("PROCYON_CONFIG", "/dev/null")
        .args(["--collector", &c.base, "--hostname", "deep-host", "--interval", "0.3", "--api-key-file"])
        .arg(key_file(dir.path(), &key))
        .arg("--spool")
        .arg(dir.path().join("spool"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let holder = Holder::start(dir.path());
    let pid = holder.pid();
    let started = start_time(&c, &token, "deep-host", pid).await;
    let url = format!("/api/hosts/deep-host/processes/{pid}/details?start_time={started}");
    let (status, details) = c.get(&url, &token).await;
    assert_eq!(status, 200, "{details}");
    check_details(&details, &holder);
    let (status, reused) =
        c.get(&format!("/api/hosts/deep-host/processes/{pid}/details?start_time=2001-01-01T00:00:00Z"), &token).await;
    assert_eq!((status, reused["error"].as_str()), (409, Some("pid_reused")), "{reused}");

    // The agent gone: a 503 naming the host.
    let _ = agent.kill();
    let _ = agent.wait();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, answer) = c.get(&url, &token).await;
        if status == 503 {
            assert!(answer["message"].as_str().unwrap().contains("deep-host"), "{answer}");
            break;
        }
        assert!(Instant::now() < deadline, "still answered after the agent was killed: {status} {answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // An agent of before details (its hello does not offer them) is never asked: a 501
    // that says why.
    let mut request = c.ws_url("/ws/agent").as_str().into_client_request().unwrap();
    request.headers_mut().insert("Authorization", format!("Api-Key {key}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut snap = procyon::sample::Sampler::new(Default::default()).sample();
    snap.host.hostname = "old-host".into();
    snap.seq = 1;
    let hello = json!({"type": "hello", "protocol": PROTOCOL_VERSION, "agent_version": "0.9",
        "host": snap.host, "allow_control": true});
    ws.send(Message::Text(hello.to_string().into())).await.unwrap();
    let welcome: Value = serde_json::from_str(ws.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let frame = full_frame(&encode_snapshot(&snap).unwrap(), &snap, Encoding::MessagePack).unwrap();
    ws.send(Message::Binary(frame.into())).await.unwrap();
    let ack: Value = serde_json::from_str(ws.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(ack["type"], "ack", "{ack}");
    let (status, old) = c.get(&format!("/api/hosts/old-host/processes/{pid}/details"), &token).await;
    assert_eq!((status, old["error"].as_str()), (501, Some("unsupported")), "{old}");
    assert!(old["message"].as_str().unwrap().contains("not supported by this agent"), "{old}");
}

/// A process put into a control group named like a Docker container's (the cgroupfs
/// driver's `/docker/ID`) is attributed to that container. Needs a writable cgroup
/// hierarchy (root, cgroup v1's `pids` controller or v2's unified one); where there is
/// none, the test says so and passes on the parsing tests of `sample::container`.
#[tokio::test(flavor = "multi_thread")]
async fn a_process_in_a_container_cgroup_is_attributed_to_it() {
    const ID: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let root = ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("cgroup.procs").exists())
        .expect("a cgroup hierarchy");
    let group = root.join("docker").join(ID);
    if std::fs::create_dir_all(&group).is_err() {
        eprintln!("SKIPPED: {} is not writable here; container parsing is tested on fixture lines", root.display());
        return;
    }
    /// Moves the process back out and removes the group, whatever happens.
    struct Cleanup(PathBuf, PathBuf, u32);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::write(self.0.join("cgroup.procs"), self.2.to_string());
            let _ = std::fs::remove_dir(&self.1);
            let _ = std::fs::remove_dir(self.1.parent().unwrap());
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let holder = Holder::start(dir.path());
    let _cleanup = Cleanup(root.to_owned(), group.clone(), holder.pid());
    std::fs::write(group.join("cgroup.procs"), holder.pid().to_string()).unwrap();

    let c = Collector::start(&dir.path().join("data"), &["--interval", "0.5"]);
    let token = c.admin_token().await;
    let (status, details) = c.get(&format!("/api/hosts/local/processes/{}/details", holder.pid()), &token).await;
    assert_eq!(status, 200, "{details}");
    assert_eq!(details["container"], json!({"runtime": "docker", "id": ID, "pod": null}), "{details}");
    assert!(details["cgroups"].as_array().unwrap().iter().any(|g| g == &format!("/docker/{ID}")), "{details}");
}
