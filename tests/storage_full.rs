//! The collector's disk fills up while a real `procyon-agent` streams to it, then space
//! comes back: uploads and agent frames are refused with a clear "storage full" 503,
//! reads keep working, nothing stored is damaged, and once space is freed the agent's
//! spooled snapshots all arrive, each once, without restarting anything.
//!
//! The collector's `--data` is a 16 MiB tmpfs mounted in a private mount namespace
//! (`unshare -m`), so the test needs root (or `CAP_SYS_ADMIN`); without it the test
//! fails and says so, rather than passing without having run. The test reaches the
//! files inside that namespace through `/proc/PID/root`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::collector::{BIN, agent_bin};
use serde_json::{Value, json};

/// Size of the collector's disk.
const DISK: &str = "16m";

/// `procyon serve` with its `--data` on a tmpfs of its own. Killed when dropped.
struct FullCollector {
    child: Child,
    base: String,
    /// `--data`, as the collector sees it.
    data: PathBuf,
    /// Its log (info).
    log: PathBuf,
    admin_password: String,
    http: reqwest::Client,
}

impl FullCollector {
    fn start(data: &Path, log: &Path) -> FullCollector {
        std::fs::create_dir_all(data).unwrap();
        let mut child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!("mount -t tmpfs -o size={DISK} procyon-full \"$0\" && exec \"$@\""))
            .arg(data)
            .arg(BIN)
            .args(["serve", "--bind", "127.0.0.1:0", "--no-local", "--keep-hours", "20years", "--data"])
            .arg(data)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("this test needs `unshare` (util-linux)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let started = Instant::now();
        let mut password_file = None;
        let base = loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "this test needs to mount a tmpfs in a private mount namespace (`unshare -m` and `mount -t \
                     tmpfs`), which takes root or CAP_SYS_ADMIN; the collector did not start ({status}): {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            assert!(started.elapsed() < Duration::from_secs(30), "the collector did not start in time");
            let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) else { continue };
            if let Some(rest) = line.strip_prefix("No users yet: created `admin`; its password is in ") {
                password_file = Some(PathBuf::from(rest.split(" (").next().unwrap()));
            }
            if let Some(rest) = line.strip_prefix("Procyon collector on ") {
                break rest.split_whitespace().next().unwrap().trim_end_matches('/').to_owned();
            }
        };
        let mut c = FullCollector {
            child,
            base,
            data: data.to_path_buf(),
            log: log.to_path_buf(),
            admin_password: String::new(),
            http: reqwest::Client::new(),
        };
        let password_file = c.inside(&password_file.expect("first start"));
        c.admin_password = std::fs::read_to_string(password_file).unwrap().trim().to_owned();
        // The tmpfs, not the directory under it.
        assert!(c.mounted(), "--data is not a tmpfs of its own");
        c
    }

    /// `path` as seen from inside the collector's mount namespace.
    fn inside(&self, path: &Path) -> PathBuf {
        Path::new(&format!("/proc/{}/root", self.child.id())).join(path.strip_prefix("/").unwrap())
    }

    /// The data directory, from inside.
    fn data(&self) -> PathBuf {
        self.inside(&self.data)
    }

    fn mounted(&self) -> bool {
        let mounts = std::fs::read_to_string(format!("/proc/{}/mounts", self.child.id())).unwrap();
        mounts.lines().any(|l| l.starts_with("procyon-full ") && l.contains(" tmpfs "))
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn token(&self) -> String {
        let r = self
            .http
            .post(self.url("/api/auth/login"))
            .json(&json!({"username": "admin", "password": self.admin_password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
    }

    /// `POST /api/keys`: a write of the accounts' kind (maintenance's too), outside
    /// the snapshot writer.
    async fn make_key(&self, token: &str, name: &str) -> (u16, Value) {
        let r =
            self.http.post(self.url("/api/keys")).bearer_auth(token).json(&json!({"name": name})).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).bearer_auth(token).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// An upload of a small snapshot of `hostname`; status, `Retry-After` and body.
    async fn upload(&self, key: &str, hostname: &str) -> (u16, Option<String>, Value) {
        let body = json!({
            "hostname": hostname,
            "snapshot_time": chrono::Utc::now().to_rfc3339(),
            "processes": [{"pid": 100, "name": "init", "cpu": 0.5, "memory": "10MB", "parent_pid": null}],
        });
        let r = self
            .http
            .post(self.url("/api/process-snapshots/"))
            .header("Authorization", format!("Api-Key {key}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        (r.status().as_u16(), retry, r.json().await.unwrap_or(Value::Null))
    }

    /// Every stored seq of `hostname`, ascending.
    async fn seqs(&self, token: &str, hostname: &str) -> Vec<u64> {
        let (status, list) =
            self.get(&format!("/api/process-snapshots/list/?hostname={hostname}&limit=1000"), token).await;
        if status == 404 {
            return Vec::new();
        }
        assert_eq!(status, 200, "{list}");
        let mut seqs: Vec<u64> = list.as_array().unwrap().iter().map(|s| s["seq"].as_u64().unwrap()).collect();
        seqs.sort_unstable();
        seqs
    }

    /// `command`, run inside the collector's mount namespace. SQLite resolves symbolic
    /// links itself, so a database cannot be opened through `/proc/PID/root`: whatever
    /// opens it runs in there.
    fn enter(&self, command: &Path, args: &[&str]) -> String {
        let out = Command::new("nsenter")
            .args(["-t", &self.child.id().to_string(), "-m", "--"])
            .arg(command)
            .args(args)
            .env("PROCYON_INTEGRITY_DB", self.data.join("procyon.db"))
            .env("PROCYON_CONFIG", "/dev/null")
            .output()
            .expect("this test needs `nsenter` (util-linux)");
        assert!(out.status.success(), "{command:?} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// A new API key, made by the CLI on the collector's database.
    fn new_key(&self, name: &str) -> String {
        let data = self.data.to_str().unwrap();
        let out = self.enter(Path::new(BIN), &["apikey", "create", "--name", name, "--data", data]);
        out.lines().last().unwrap().trim().to_owned()
    }

    /// `PRAGMA integrity_check` on the collector's database, run alongside it (WAL lets
    /// a reader in), by [`integrity_check_in_the_namespace`].
    fn integrity(&self) -> String {
        let me = std::env::current_exe().unwrap();
        let out = self.enter(&me, &["--exact", "integrity_check_in_the_namespace", "--ignored", "--nocapture"]);
        let line = out.lines().find_map(|l| l.strip_prefix("integrity: ")).unwrap_or_else(|| panic!("{out}"));
        line.to_owned()
    }
}

impl Drop for FullCollector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running agent, killed when dropped.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The seqs waiting in an agent's spool.
fn spooled(spool: &Path) -> Vec<u64> {
    let files = std::fs::read_dir(spool).into_iter().flatten().flatten();
    let mut seqs: Vec<u64> = files.filter_map(|e| e.file_name().to_str()?.strip_suffix(".zst")?.parse().ok()).collect();
    seqs.sort_unstable();
    seqs
}

/// Whether `cond` came true within `limit`.
async fn wait_until<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    false
}

fn contiguous_from_one(seqs: &[u64]) -> bool {
    seqs.first() == Some(&1) && seqs.windows(2).all(|w| w[1] == w[0] + 1)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_writes_keeps_reads_and_loses_nothing_once_space_returns() {
    // Built (or found up to date) before the clock starts.
    let agent_bin = agent_bin();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut c = FullCollector::start(&data, &dir.path().join("collector.log"));
    let token = c.token().await;
    let agent_key = c.new_key("fleet");
    let upload_key = c.new_key("uploads");
    let key_file = dir.path().join("fleet.key");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&key_file, &agent_key).unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let spool = dir.path().join("spool");
    let agent_log = dir.path().join("agent.log");
    let _agent = Agent(
        Command::new(&agent_bin)
            .env("PROCYON_CONFIG", "/dev/null")
            .env("PROCYON_LOG", "info")
            .args(["--collector", &c.base, "--hostname", "full-host", "--interval", "0.3", "--api-key-file"])
            .arg(&key_file)
            .arg("--spool")
            .arg(&spool)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&agent_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let collector_log = c.log.clone();
    let logs = || {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!("collector:\n{}\nagent:\n{}", read(&collector_log), read(&agent_log))
    };
    let reported = wait_until(Duration::from_secs(30), || async { c.seqs(&token, "full-host").await.len() >= 3 }).await;
    assert!(reported, "the agent reports: {}", logs());
    assert_eq!(c.upload(&upload_key, "rest-host").await.0, 201);
    let before = c.seqs(&token, "full-host").await;
    assert!(contiguous_from_one(&before), "{before:?}");
    let (_, first_list) = c.get("/api/process-snapshots/list/?hostname=full-host&limit=1000", &token).await;
    let first_id = first_list.as_array().unwrap().iter().find(|s| s["seq"] == 1).unwrap()["snapshot_id"].clone();
    let (status, first_before) = c.get(&format!("/api/process-snapshots/{first_id}/"), &token).await;
    assert_eq!(status, 200);

    // A file of zeros takes every byte left next to the database.
    let filler = c.data().join("filler");
    {
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 << 10];
        let full = loop {
            if let Err(e) = file.write_all(&chunk) {
                break e;
            }
        };
        assert_eq!(full.kind(), std::io::ErrorKind::StorageFull, "{full}");
    }

    // SQLite fills what is left of its own files first; then writes are refused.
    let mut refused = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while refused.is_none() && Instant::now() < deadline {
        let (status, retry, body) = c.upload(&upload_key, "rest-host").await;
        match status {
            200 | 201 => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => refused = Some((status, retry, body)),
        }
    }
    let (status, retry, body) = refused.expect("uploads are refused once the disk is full");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "storage_full", "{body}");
    assert!(body["message"].as_str().unwrap().contains("storage is full"), "{body}");
    assert_eq!(retry.as_deref(), Some("10"));
    let full_at = c.seqs(&token, "full-host").await;

    // Refused, and said so, while the collector keeps serving reads; the agent keeps
    // its snapshots.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(c.running(), "the collector stays up");
    let (status, hosts) = c.get("/api/hosts/", &token).await;
    assert_eq!(status, 200, "{hosts}");
    assert!(hosts.as_array().unwrap().iter().any(|h| h["hostname"] == "full-host"), "{hosts}");
    let (status, latest) = c.get("/api/process-snapshots/latest/?hostname=full-host", &token).await;
    assert_eq!(status, 200, "{latest}");
    // Enough at once that the collector opens more database connections meanwhile.
    let reads = (0..24).map(|i| {
        let path = ["/api/hosts/", "/api/process-snapshots/list/?limit=5", "/api/process-snapshots/latest/"][i % 3];
        c.get(path, &token)
    });
    for (status, body) in futures_util::future::join_all(reads).await {
        assert_eq!(status, 200, "reads are served: {body}");
    }
    let (status, still) = c.get(&format!("/api/process-snapshots/{first_id}/"), &token).await;
    assert_eq!((status, &still), (200, &first_before));
    let (status, _, body) = c.upload(&upload_key, "rest-host").await;
    assert_eq!((status, body["error"].as_str()), (503, Some("storage_full")), "{body}");
    // A small change may still fit in pages the database has; if not, it is refused
    // the same way.
    let (status, body) = c.make_key(&token, "during").await;
    assert!(status == 201 || (status, body["error"].as_str()) == (503, Some("storage_full")), "{status} {body}");
    let during = c.seqs(&token, "full-host").await;
    assert!(during.len() <= full_at.len() + 2, "agent frames are refused too: {full_at:?} then {during:?}");
    let agent_says = std::fs::read_to_string(&agent_log).unwrap();
    assert!(agent_says.contains("storage is full"), "the agent hears why: {agent_says}");
    let waiting = spooled(&spool);
    assert!(waiting.len() >= 5, "the agent keeps what was refused in its spool: {waiting:?}");
    let newest = *waiting.last().unwrap();

    // Space comes back: no restart, and everything spooled arrives, once.
    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    let drained = wait_until(Duration::from_secs(40), || async {
        let stored = c.seqs(&token, "full-host").await;
        stored.last().is_some_and(|&last| last >= newest) && !spooled(&spool).contains(&newest)
    })
    .await;
    assert!(drained, "the spool drains once space returns: {}", logs());
    println!("{} spooled snapshots stored {:?} after space returned", waiting.len(), freed.elapsed());
    let after = c.seqs(&token, "full-host").await;
    assert!(contiguous_from_one(&after), "a gap or a duplicate in {after:?}");
    assert!(after.starts_with(&before));
    assert_eq!(c.upload(&upload_key, "rest-host").await.0, 201, "uploads are stored again");
    let (status, body) = c.make_key(&token, "after").await;
    assert_eq!(status, 201, "{body}");
    assert!(c.running(), "the collector stays up");
    assert_eq!(c.integrity(), "ok");
    let (status, still) = c.get(&format!("/api/process-snapshots/{first_id}/"), &token).await;
    assert_eq!((status, &still), (200, &first_before));

    // Said once (not per refused request), and its end said too.
    let log = c.log();
    assert_eq!(log.matches("the disk holding the database is full: snapshots are refused").count(), 1, "{log}");
    assert!(log.contains("the database is writable again"), "{log}");
    assert!(!log.contains("non-zero transaction depth"), "{log}");
    for per_request in ["cannot store an agent's snapshot", "request failed", "response failed"] {
        assert!(!log.contains(per_request), "not logged per refusal: {log}");
    }
    assert!(started.elapsed() < Duration::from_secs(60), "bounded: {:?}", started.elapsed());
}

/// Not a test of its own: the test above runs it inside the collector's mount
/// namespace, where the database is, to check it.
#[tokio::test]
#[ignore = "run by a_full_disk_refuses_writes_keeps_reads_and_loses_nothing_once_space_returns"]
async fn integrity_check_in_the_namespace() {
    let Some(db) = std::env::var_os("PROCYON_INTEGRITY_DB") else { return };
    let db = PathBuf::from(db);
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    let result: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check").fetch_all(&pool).await.unwrap();
    pool.close().await;
    println!("integrity: {}", result.join("; "));
}
