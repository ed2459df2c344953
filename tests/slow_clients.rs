//! Slow and stuck clients all at once against one real `procyon serve`, while a real
//! agent streams to it: a thousand idle dashboards (live streams of a host that sends
//! nothing new, never read), a dashboard that stops reading a busy host's stream, and
//! an upload whose body trickles in at a byte a second. Meanwhile the collector's
//! memory (its resident size, from `/proc`) stays bounded, a normal dashboard and REST
//! client are served as usual, and the two stuck connections are closed by the
//! collector: the reader by `--write-timeout`, the upload by the body timeout. The idle
//! dashboards, which are owed nothing, stay open, and once they leave the collector
//! holds no more descriptors than before.
//!
//! The listener's timeouts each have a test of their own on an in-process server
//! (tests/listener.rs, tests/limits.rs); this one is the whole collector under all of
//! them together, measured from outside.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::collector::{Collector, agent_bin, new_key};
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// How long a write may make no progress: short, so the test is too.
const WRITE_TIMEOUT: &str = "2s";
/// Idle dashboards wanted (fewer if this process may not open that many files).
const IDLE: usize = 1000;
/// Most the collector's resident memory may grow per idle dashboard.
const MAX_KIB_PER_IDLE: u64 = 128;
/// Most the collector's resident memory may grow while the stuck clients are held.
const MAX_STUCK_GROWTH_KIB: u64 = 64 << 10;

/// A running agent, killed when dropped.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Resident memory of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The socket inodes `pid` holds open.
fn sockets_of(pid: u32) -> Vec<u64> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten();
    let links = fds.filter_map(|e| std::fs::read_link(e.path()).ok());
    links.filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()).collect()
}

/// The inode of the collector's end of the TCP connection from local port `client`.
fn server_end(server: u16, client: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = |field: &str| u16::from_str_radix(field.rsplit(':').next()?, 16).ok();
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (port(f[1]) == Some(server) && port(f[2]) == Some(client)).then(|| f[9].parse().ok()).flatten()
    })
}

/// The inode of the collector's end of the connection from local port `client`, once
/// the collector holds it (a connection not accepted yet has no inode of its own).
async fn held_end(pid: u32, server: u16, client: u16) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(inode) = server_end(server, client).filter(|&i| i != 0)
            && sockets_of(pid).contains(&inode)
        {
            return inode;
        }
        assert!(Instant::now() < deadline, "the collector never took the connection from port {client}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Raises this process's open-file limit as far as it may go; returns the limit.
fn raise_open_files() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < hard {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    getrlimit(Resource::RLIMIT_NOFILE).unwrap().0
}

/// A small upload of `hostname`.
fn upload_body(hostname: &str) -> String {
    json!({
        "hostname": hostname,
        "snapshot_time": chrono::Utc::now().to_rfc3339(),
        "processes": [{"pid": 100, "name": "init", "cpu": 0.5, "memory": "10MB", "parent_pid": null}],
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stuck_clients_are_closed_and_a_thousand_idle_ones_cost_little_while_others_are_served() {
    let limit = raise_open_files();
    let idle = IDLE.min(usize::try_from(limit).unwrap_or(usize::MAX).saturating_sub(200));
    assert!(idle >= 100, "this test needs at least 300 open files, and may have {limit}");
    agent_bin();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("collector.log");
    let streams = (idle + 10).to_string();
    let c = Collector::start_logging(
        &data,
        &[
            "--no-local",
            "--write-timeout",
            WRITE_TIMEOUT,
            // Every client here is one user on one address: its shares must fit them.
            "--max-streams-per-user",
            &streams,
            "--max-connections-per-address",
            "4096",
        ],
        Some(&log),
    );
    let pid = c.child.as_ref().unwrap().id();
    let port: u16 = c.base.rsplit(':').next().unwrap().parse().unwrap();
    let token = c.admin_token().await;
    let agent_key = dir.path().join("fleet.key");
    std::fs::write(&agent_key, new_key(&data, "fleet", None)).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&agent_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let upload_key = new_key(&data, "uploads", None);
    let _agent = Agent(
        Command::new(agent_bin())
            .env("PROCYON_CONFIG", "/dev/null")
            .args(["--collector", &c.base, "--hostname", "busy", "--interval", "200ms", "--api-key-file"])
            .arg(&agent_key)
            .arg("--spool")
            .arg(dir.path().join("spool"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert_eq!(c.upload(&upload_key, upload_body("quiet")).await.0, 201);
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.get("/api/process-snapshots/latest/?hostname=busy", &token).await.0 != 200 {
        assert!(Instant::now() < deadline, "the agent reports");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let base_rss = rss_kib(pid);
    let base_sockets = sockets_of(pid).len();

    // A normal dashboard follows the busy host, and a normal client reads its latest
    // snapshot over REST, all along.
    let live_url = |host: &str| c.ws_url(&format!("/ws/process-snapshots/?hostname={host}&delta=1&token={token}"));
    let (mut normal, _) = tokio_tungstenite::connect_async(live_url("busy")).await.unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let reader = {
        let received = received.clone();
        tokio::spawn(async move {
            while let Some(Ok(message)) = normal.next().await {
                if message.is_text() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let rest_failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let rest_reads = Arc::new(AtomicU64::new(0));
    let stop_rest = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rest = {
        let (failures, reads, stop) = (rest_failures.clone(), rest_reads.clone(), stop_rest.clone());
        let (url, token) = (c.url("/api/process-snapshots/latest/?hostname=busy"), token.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
            while !stop.load(Ordering::Relaxed) {
                match http.get(&url).bearer_auth(&token).send().await {
                    Ok(r) if r.status() == 200 => match r.bytes().await {
                        Ok(_) => {
                            reads.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    },
                    Ok(r) => failures.lock().unwrap().push(format!("HTTP {}", r.status())),
                    Err(e) => failures.lock().unwrap().push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };

    // A thousand dashboards on a host that sends nothing new: open, never read.
    let url = live_url("quiet");
    let opened: Vec<_> = futures_util::stream::iter(0..idle)
        .map(|_| {
            let url = url.clone();
            async move { tokio_tungstenite::connect_async(url).await.map(|(ws, _)| ws) }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let idlers: Vec<_> = opened.into_iter().collect::<Result<_, _>>().expect("every idle dashboard connects");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss_kib(pid);
    let per_idle = idle_rss.saturating_sub(base_rss) / idle as u64;
    assert!(per_idle <= MAX_KIB_PER_IDLE, "{per_idle} KiB per idle dashboard ({base_rss} KiB before, {idle_rss} with)");
    assert!(sockets_of(pid).len() >= base_sockets + idle, "every idle dashboard is held");

    // A dashboard that stops reading the busy host's stream, with a small receive
    // buffer so that the collector's writes soon stall.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(format!("127.0.0.1:{port}").parse().unwrap()).await.unwrap();
    let stuck_port = stream.local_addr().unwrap().port();
    let request =
        c.ws_url(&format!("/ws/process-snapshots/?hostname=busy&token={token}")).into_client_request().unwrap();
    let (stuck, _) = tokio_tungstenite::client_async(request, stream).await.unwrap();
    let stuck_since = Instant::now();
    let stuck_inode = held_end(pid, port, stuck_port).await;

    // An upload whose body comes a byte a second.
    let mut trickle = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let trickle_port = trickle.local_addr().unwrap().port();
    let head = format!(
        "POST /api/process-snapshots/ HTTP/1.1\r\nHost: x\r\nAuthorization: Api-Key {upload_key}\r\n\
         Content-Type: application/json\r\nContent-Length: 4096\r\n\r\n{{"
    );
    trickle.write_all(head.as_bytes()).await.unwrap();
    let trickle_since = Instant::now();
    let trickling = tokio::spawn(async move {
        while trickle.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let trickle_inode = held_end(pid, port, trickle_port).await;
    // Other uploads are stored meanwhile.
    assert_eq!(c.upload(&upload_key, upload_body("quiet")).await.0, 201);

    // Both stuck connections are closed by the collector; its memory is watched all
    // the while.
    let mut peak_rss = idle_rss;
    let (mut stuck_closed, mut trickle_closed) = (None, None);
    let seen_before_close = received.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(120);
    while stuck_closed.is_none() || trickle_closed.is_none() {
        assert!(
            Instant::now() < deadline,
            "stuck connections still open: reader {stuck_closed:?}, upload {trickle_closed:?}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        peak_rss = peak_rss.max(rss_kib(pid));
        let held = sockets_of(pid);
        if stuck_closed.is_none() && !held.contains(&stuck_inode) {
            stuck_closed = Some(stuck_since.elapsed());
        }
        if trickle_closed.is_none() && !held.contains(&trickle_inode) {
            trickle_closed = Some(trickle_since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let growth = peak_rss.saturating_sub(idle_rss);
    assert!(growth <= MAX_STUCK_GROWTH_KIB, "the collector grew by {growth} KiB while the stuck clients were held");
    drop(stuck);
    trickling.abort();

    // The others were served all along, and still are.
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.load(Ordering::Relaxed) < seen_before_close + 3 {
        assert!(Instant::now() < deadline, "the normal dashboard gets new snapshots");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_rest.store(true, Ordering::Relaxed);
    rest.await.unwrap();
    let failures = rest_failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "REST reads failed meanwhile: {failures:?}");
    assert!(rest_reads.load(Ordering::Relaxed) >= 10, "REST reads went on");
    assert!(sockets_of(pid).len() >= base_sockets + idle, "idle dashboards are owed nothing and stay open");
    assert_eq!(c.upload(&upload_key, upload_body("quiet")).await.0, 201);

    // Once the idle dashboards leave, so do their descriptors.
    drop(idlers);
    let settled = common::wait_for(Duration::from_secs(30), || sockets_of(pid).len() <= base_sockets + 2);
    assert!(settled, "{} sockets held after the clients left, {base_sockets} before", sockets_of(pid).len());
    reader.abort();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!log_text.contains("panicked"), "{log_text}");
    println!(
        "{idle} idle dashboards: {per_idle} KiB each ({} MiB before, {} MiB with them); the stuck reader closed after \
         {:.1} s, the trickling upload after {:.1} s; peak growth meanwhile {} KiB; {} REST reads and {} live \
         messages served meanwhile",
        base_rss >> 10,
        idle_rss >> 10,
        stuck_closed.unwrap().as_secs_f64(),
        trickle_closed.unwrap().as_secs_f64(),
        growth,
        rest_reads.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
    );
}
