//! The network map (`GET /api/network-map`) against a real collector and two real
//! agents, each in a PID namespace of its own (`unshare --pid --mount-proc`), so each
//! sees only its own processes, like two machines. Their processes talk over two
//! non-loopback addresses the test adds to this machine (`ip addr add`, which takes root
//! or CAP_NET_ADMIN), and over loopback:
//!
//! - `mapclient` on host A connects from A's address to `mapserver` on host B's
//!   address: one edge between the two processes, across hosts;
//! - `mapclient` connects to `mapcache` over loopback on its own host: an edge within
//!   A; and to `mapserver`'s loopback port: not joined to B (loopback stays in a host);
//! - then the cross-host connection closes: the live map loses the edge, a map of the
//!   range before keeps it.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::collector::{Collector, agent_bin, new_key};
use serde_json::Value;

/// Two non-loopback addresses of this machine, made for the test: on a dummy interface
/// of their own, or where the kernel has no dummy interfaces, on `lo` (any address
/// there is this machine's; only 127.0.0.0/8 is loopback). Removed when dropped.
struct Addresses {
    /// The dummy interface made, or `None` when the addresses are on `lo`.
    dummy: Option<String>,
    a: String,
    b: String,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

impl Addresses {
    fn create() -> Option<Addresses> {
        let n = std::process::id() % 60_000;
        let (x, y) = (n / 250 % 250 + 1, n % 250 + 1);
        let (a, b) = (format!("10.213.{x}.{y}"), format!("10.214.{x}.{y}"));
        let name = format!("pmap{n}");
        let _ = ip(&["link", "del", &name]);
        let dummy = ip(&["link", "add", &name, "type", "dummy"]).then_some(name);
        let made = Addresses { dummy, a, b };
        let device = made.dummy.clone().unwrap_or_else(|| "lo".into());
        for addr in [&made.a, &made.b] {
            if !ip(&["addr", "add", &format!("{addr}/32"), "dev", &device]) {
                return None;
            }
        }
        if made.dummy.is_some() {
            assert!(ip(&["link", "set", &device, "up"]));
        }
        Some(made)
    }
}

impl Drop for Addresses {
    fn drop(&mut self) {
        match &self.dummy {
            Some(name) => {
                ip(&["link", "del", name]);
            }
            None => {
                for addr in [&self.a, &self.b] {
                    ip(&["addr", "del", &format!("{addr}/32"), "dev", "lo"]);
                }
            }
        }
    }
}

/// A "host": an agent and the given peers (Python programs below) in one PID namespace.
/// Killed when dropped (the namespace's init takes every process in it along).
struct Host(Child);

impl Host {
    fn start(dir: &Path, collector: &str, key: &Path, hostname: &str, peers: &[Vec<String>]) -> Host {
        let script = dir.join("peer.py");
        std::fs::write(&script, PEER).unwrap();
        // The peers in the background, then the agent as the namespace's last word.
        let mut shell = String::new();
        for peer in peers {
            shell.push_str(&format!("python3 {} {} & ", script.display(), peer.join(" ")));
        }
        shell.push_str("exec \"$0\" \"$@\"");
        let spool = dir.join(format!("spool-{hostname}"));
        let child = Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child", "--mount-proc", "sh", "-c", &shell])
            .arg(agent_bin())
            .args(["--collector", collector, "--hostname", hostname, "--interval", "0.5", "--api-key-file"])
            .arg(key)
            .arg("--spool")
            .arg(&spool)
            .env("PROCYON_CONFIG", "/dev/null")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(spool.with_extension("log")).unwrap())
            .spawn()
            .unwrap();
        Host(child)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A peer: names itself (the process name the map shows), listens on `listen=ADDR:PORT`
/// words and accepts, connects for `connect=SRC:DST:PORT` words (keeping every socket
/// open), and closes its connections to `close_port=PORT` once the file `close_when`
/// names exists.
const PEER: &str = r#"
import ctypes, os, select, socket, sys, time
name, words = sys.argv[1], sys.argv[2:]
ctypes.CDLL(None).prctl(15, name.encode(), 0, 0, 0)
listeners, held, clients = [], [], []
close_port, close_when = None, None
for w in words:
    kind, _, arg = w.partition("=")
    if kind == "listen":
        addr, port = arg.rsplit(":", 1)
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, int(port))); s.listen(16); listeners.append(s)
    elif kind == "close_port":
        close_port = int(arg)
    elif kind == "close_when":
        close_when = arg
for w in words:
    kind, _, arg = w.partition("=")
    if kind == "connect":
        src, dst, port = arg.split(":")
        for _ in range(200):
            try:
                c = socket.socket(); c.bind((src, 0)); c.connect((dst, int(port))); clients.append((int(port), c)); break
            except OSError:
                c.close(); time.sleep(0.1)
        else:
            sys.exit("cannot connect to %s:%s" % (dst, port))
while True:
    ready, _, _ = select.select(listeners, [], [], 0.2)
    for s in ready:
        held.append(s.accept()[0])
    if close_when and os.path.exists(close_when):
        for port, c in clients:
            if port == close_port:
                c.close()
        clients = [(p, c) for p, c in clients if p != close_port]
        close_when = None
"#;

fn key_file(dir: &Path, key: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("fleet.key");
    std::fs::write(&path, key).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn can_unshare_pid() -> bool {
    Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A free TCP port on `addr` (free when asked; the peers bind it a moment later).
fn free_port(addr: &str) -> u16 {
    std::net::TcpListener::bind((addr, 0)).unwrap().local_addr().unwrap().port()
}

/// The node an edge end names.
fn node<'a>(map: &'a Value, id: &str) -> &'a Value {
    map["nodes"].as_array().unwrap().iter().find(|n| n["id"] == id).unwrap_or_else(|| panic!("no node {id}"))
}

/// Each edge as (source host, source name, target host, target name, port).
fn edges(map: &Value) -> Vec<(String, String, String, String, u64)> {
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    map["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let (s, t) = (node(map, e["source"].as_str().unwrap()), node(map, e["target"].as_str().unwrap()));
            (
                text(&s["hostname"]),
                text(&s["name"]),
                text(&t["hostname"]),
                text(&t["name"]),
                e["remote_port"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn cross_host(map: &Value) -> Vec<&Value> {
    map["edges"].as_array().unwrap().iter().filter(|e| e["cross_host"] == true).collect()
}

fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.len() > 3000 { format!("{}…", &text[..3000]) } else { text }
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_talking_across_hosts_are_one_edge_and_loopback_stays_in_its_host() {
    if !can_unshare_pid() {
        assert!(std::env::var_os("CI").is_none(), "this test needs a PID namespace (root or CAP_SYS_ADMIN)");
        eprintln!("skipped: this test needs a PID namespace (`unshare --pid --mount-proc`: root or CAP_SYS_ADMIN)");
        return;
    }
    let Some(net) = Addresses::create() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "this test needs to add addresses (`ip addr add`: root or CAP_NET_ADMIN)"
        );
        eprintln!("skipped: this test needs to add addresses (`ip addr add`: root or CAP_NET_ADMIN)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let c = Collector::start(&data, &["--no-local"]);
    let token = c.admin_token().await;
    let key = key_file(dir.path(), &new_key(&data, "fleet", None));

    let server_port = free_port(&net.b);
    let server_loopback_port = free_port("127.0.0.1");
    let cache_port = free_port("127.0.0.1");
    let close = dir.path().join("close-now");
    let _b = Host::start(
        dir.path(),
        &c.base,
        &key,
        "map-b",
        &[vec![
            "mapserver".into(),
            format!("listen={}:{server_port}", net.b),
            format!("listen=127.0.0.1:{server_loopback_port}"),
        ]],
    );
    let _a = Host::start(
        dir.path(),
        &c.base,
        &key,
        "map-a",
        &[
            vec!["mapcache".into(), format!("listen=127.0.0.1:{cache_port}")],
            vec![
                "mapclient".into(),
                format!("connect={}:{}:{server_port}", net.a, net.b),
                format!("connect=127.0.0.1:127.0.0.1:{server_loopback_port}"),
                format!("connect=127.0.0.1:127.0.0.1:{cache_port}"),
                format!("close_port={server_port}"),
                format!("close_when={}", close.display()),
            ],
        ],
    );

    let map_of = |query: String| {
        let (c, token) = (&c, token.clone());
        async move {
            let (status, body) = c.get(&format!("/api/network-map{query}"), &token).await;
            assert_eq!(status, 200, "{query}: {}", short(&body));
            body
        }
    };
    let client = |e: &(String, String, String, String, u64)| e.0 == "map-a" && e.1 == "mapclient";
    let started = Instant::now();
    let live = loop {
        let map = map_of(String::new()).await;
        if edges(&map).iter().filter(|e| client(e)).count() >= 3 {
            break map;
        }
        assert!(started.elapsed() < Duration::from_secs(90), "the client's connections never showed: {}", short(&map));
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let t_open = chrono::Utc::now();
    assert_eq!(live["live"], true);

    // One edge between the two processes, across hosts, as ESTABLISHED.
    let across = cross_host(&live);
    assert_eq!(across.len(), 1, "{}", short(&live));
    let e = across[0];
    let (s, t) = (node(&live, e["source"].as_str().unwrap()), node(&live, e["target"].as_str().unwrap()));
    assert_eq!(
        (s["hostname"].as_str(), s["name"].as_str(), s["kind"].as_str()),
        (Some("map-a"), Some("mapclient"), Some("process"))
    );
    assert_eq!(
        (t["hostname"].as_str(), t["name"].as_str(), t["kind"].as_str()),
        (Some("map-b"), Some("mapserver"), Some("process"))
    );
    assert_eq!(
        (e["remote_port"].as_u64(), e["state"].as_str(), e["count"].as_u64()),
        (Some(u64::from(server_port)), Some("ESTABLISHED"), Some(1))
    );
    assert!(t["listening_ports"].as_array().unwrap().contains(&Value::from(server_port)), "{}", short(t));
    // Matched on B's own address.
    let b_host = live["hosts"].as_array().unwrap().iter().find(|h| h["hostname"] == "map-b").unwrap();
    assert!(b_host["addresses"].as_array().unwrap().contains(&Value::from(net.b.clone())), "{}", short(b_host));

    // Loopback: the cache on the client's own host is joined; the server's loopback
    // port on the other host is not (the client's host, process unknown).
    let all = edges(&live);
    assert!(
        all.contains(&("map-a".into(), "mapclient".into(), "map-a".into(), "mapcache".into(), u64::from(cache_port))),
        "{all:?}"
    );
    assert!(
        all.contains(&(
            "map-a".into(),
            "mapclient".into(),
            "map-a".into(),
            "map-a".into(),
            u64::from(server_loopback_port)
        )),
        "{all:?}"
    );
    assert!(!all.iter().any(|e| e.4 == u64::from(server_loopback_port) && e.2 == "map-b" && e.0 == "map-a"), "{all:?}");

    // Narrowed to one host: nothing across.
    let only_b = map_of("?hosts=MAP-B".into()).await;
    assert!(cross_host(&only_b).is_empty(), "{}", short(&only_b));
    assert!(only_b["hosts"].as_array().unwrap().iter().all(|h| h["hostname"] == "map-b"), "{}", short(&only_b));

    // Let a stored snapshot of both hosts hold the open connection, then close it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t_stored = chrono::Utc::now();
    std::fs::write(&close, "").unwrap();
    let started = Instant::now();
    loop {
        let map = map_of(String::new()).await;
        if cross_host(&map).is_empty() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the connection never closed: {}", short(&map));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Loopback connections are still open: the map is not empty, only without the edge.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = map_of(String::new()).await;
    assert!(cross_host(&now).is_empty() && !now["edges"].as_array().unwrap().is_empty(), "{}", short(&now));

    // The range while it was open still has it; a moment then has it; a moment now has not.
    let iso = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let range = map_of(format!("?from={}&to={}", iso(t_open - chrono::Duration::seconds(30)), iso(t_stored))).await;
    assert_eq!(range["live"], false);
    assert_eq!(cross_host(&range).len(), 1, "{}", short(&range));
    assert!(
        range["hosts"].as_array().unwrap().iter().all(|h| h["snapshots"].as_u64().unwrap() >= 2),
        "{}",
        short(&range)
    );
    let then = map_of(format!("?to={}", iso(t_stored))).await;
    assert_eq!(cross_host(&then).len(), 1, "{}", short(&then));
    let later = map_of("?to=now".into()).await;
    assert!(cross_host(&later).is_empty(), "{}", short(&later));
    let whole = map_of(format!("?from={}", iso(t_open - chrono::Duration::seconds(30)))).await;
    assert_eq!(cross_host(&whole).len(), 1, "the union of the range: {}", short(&whole));

    // Bounded: one edge at most, and the answer says what it left out.
    let cut = map_of("?max_edges=1".into()).await;
    assert_eq!(cut["edges"].as_array().unwrap().len(), 1, "{}", short(&cut));
    assert_eq!(cut["truncated"], true);
    assert!(cut["omitted"]["edges"].as_u64().unwrap() >= 1 && !cut["notes"].as_array().unwrap().is_empty());

    // Bad parameters: 422 naming the field; no credentials: 401.
    let long = "x".repeat(5000);
    for (query, field) in [
        (format!("?from={}&to={}", iso(t_stored), iso(t_open)), "from"),
        ("?from=yesterday".into(), "from"),
        ("?to=soon".into(), "to"),
        ("?max_edges=0".into(), "max_edges"),
        ("?max_nodes=20001".into(), "max_nodes"),
        ("?max_nodes=lots".into(), "max_nodes"),
        (format!("?hosts={long}"), "hosts"),
    ] {
        let (status, body) = c.get(&format!("/api/network-map{query}"), &token).await;
        assert_eq!(status, 422, "{query}: {}", short(&body));
        assert_eq!(body["field"], field, "{query}: {}", short(&body));
    }
    let (status, _) = c.get("/api/network-map", "not-a-token").await;
    assert_eq!(status, 401);
}
