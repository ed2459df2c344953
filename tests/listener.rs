//! The collector's listener against real clients: slow clients cut off by the header and
//! body timeouts, the connection cap, WebSockets outliving those timeouts; TLS with a
//! certificate made here, real agents that trust its CA, pin it or refuse it, and the
//! certificate reloaded when its files change.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::collector::{BIN, Collector, agent_bin, new_key};
use futures_util::{SinkExt, StreamExt};
use procyon::server::{Limits, listen_with};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::Message;

// ---------------------------------------------------------------------------------
// An in-process collector with short limits.

struct InProcess {
    addr: SocketAddr,
    password: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    collector: Option<procyon::server::Collector>,
    _dir: tempfile::TempDir,
}

impl InProcess {
    async fn start(limits: Limits) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let collector = procyon::server::Collector::start(
            dir.path(),
            false,
            procyon::server::Settings::default(),
            tokio::sync::watch::channel(false).1,
        )
        .await
        .unwrap();
        let password = procyon::server::ensure_admin(&collector.state.store).await.unwrap().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(listen_with(collector.state.clone(), listener, limits, None, async move {
            let _ = stopped.await;
        }));
        InProcess { addr, password, stop: Some(stop), server, collector: Some(collector), _dir: dir }
    }

    async fn token(&self) -> String {
        let r = reqwest::Client::new()
            .post(format!("http://{}/api/auth/login", self.addr))
            .json(&json!({ "username": "admin", "password": self.password }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
    }

    /// Stops the listener (graceful) and the collector; the listener must end in time.
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), &mut self.server)
            .await
            .expect("the listener ends after stop")
            .unwrap()
            .unwrap();
        self.collector.take().unwrap().stop().await;
    }
}

fn short(header: u64, body: u64, max_connections: usize) -> Limits {
    Limits {
        header_read_timeout: Duration::from_millis(header),
        body_timeout: Duration::from_millis(body),
        max_connections,
        // Every client here is one address: no reserve for clients holding few (see
        // tests/limits.rs for it).
        reserve: 0,
        ..Limits::default()
    }
}

/// Reads until the server closes the connection (or `limit` passes); what it sent, and
/// whether it closed.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_in_its_request_line_is_disconnected_after_the_header_timeout() {
    let server = InProcess::start(short(300, 5000, 64)).await;
    let addr = server.addr;
    let (elapsed, closed) = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        let started = Instant::now();
        stream.write_all(b"GET /api/hea").unwrap();
        let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(5));
        (started.elapsed(), closed)
    })
    .await
    .unwrap();
    assert!(closed, "the stalled connection stayed open");
    assert!(elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3), "{elapsed:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_and_a_trickling_body_is_cut_off() {
    let server = InProcess::start(short(400, 400, 64)).await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        // A whole request is answered, then the idle connection closes.
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let started = Instant::now();
        let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(5));
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(closed && started.elapsed() < Duration::from_secs(3), "idle keep-alive kept open");

        // Headers in time, then a body a few bytes at a time, each well within the
        // deadline but together past it.
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(
                b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
            )
            .unwrap();
        let started = Instant::now();
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(100));
            if stream.write_all(b" ").is_err() {
                break;
            }
        }
        let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(5));
        assert!(closed, "a trickling body kept the connection open: {answer}");
        assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
        // Whatever it answered, it was not a sign-in.
        assert!(!answer.contains("token"), "{answer}");
    })
    .await
    .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_wait_for_a_free_slot() {
    let server = InProcess::start(short(5000, 5000, 2)).await;
    let addr = server.addr;
    let health = format!("http://{addr}/api/health");
    // Two silent clients take both slots.
    let first = TcpStream::connect(addr).unwrap();
    let second = TcpStream::connect(addr).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let waiting = client.get(&health).timeout(Duration::from_millis(700)).send().await;
    assert!(waiting.is_err(), "a third connection was served past the cap: {waiting:?}");
    drop(first);
    let served = client.get(&health).timeout(Duration::from_secs(5)).send().await.unwrap();
    assert_eq!(served.status(), 200);
    drop(second);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_stay_open_past_the_timeouts() {
    let server = InProcess::start(short(200, 200, 64)).await;
    let token = server.token().await;
    let url = format!("ws://{}/ws/process-snapshots/?token={token}", server.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    ws.send(Message::Ping(b"still there?".to_vec().into())).await.unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(message) = ws.next().await {
            if let Message::Pong(payload) = message.unwrap() {
                return payload;
            }
        }
        panic!("the WebSocket closed");
    })
    .await
    .expect("a pong after the timeouts passed");
    assert_eq!(&pong[..], b"still there?");
    // Graceful shutdown still ends with the WebSocket open.
    server.stop().await;
}

// ---------------------------------------------------------------------------------
// TLS with a private CA, end to end.

/// A CA and certificates for 127.0.0.1 signed by it.
struct Pki {
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
    dir: PathBuf,
}

/// A leaf certificate: its PEM, its key's PEM, its DER's SHA-256.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    pin: [u8; 32],
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "Procyon test CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki { ca, ca_key, dir: dir.to_path_buf() }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn leaf(&self) -> Leaf {
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), pin: Sha256::digest(cert.der()).into() }
    }

    /// Writes `leaf` where the collector reads it: a new file renamed over the old one,
    /// as certificate tools do.
    fn install(&self, leaf: &Leaf) -> (PathBuf, PathBuf) {
        let (cert, key) = (self.dir.join("cert.pem"), self.dir.join("key.pem"));
        for (path, text) in [(&key, &leaf.key_pem), (&cert, &leaf.cert_pem)] {
            let new = path.with_extension("new");
            std::fs::write(&new, text).unwrap();
            std::fs::rename(&new, path).unwrap();
        }
        (cert, key)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// The SHA-256 of the leaf certificate `addr` serves now (the chain is not checked).
async fn served_pin(addr: &str) -> [u8; 32] {
    #[derive(Debug)]
    struct Anything(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for Anything {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Anything(provider)))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    Sha256::digest(leaf.as_ref()).into()
}

/// An agent command for `collector` with its own spool and key file.
fn agent(collector: &str, key: &str, dir: &Path, name: &str, extra: &[&str]) -> Command {
    use std::os::unix::fs::PermissionsExt;
    let key_file = dir.join(format!("{name}.key"));
    std::fs::write(&key_file, key).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut command = Command::new(agent_bin());
    command
        .env("PROCYON_CONFIG", "/dev/null")
        .env("PROCYON_LOG", "info")
        .args(["--collector", collector, "--hostname", name, "--interval", "0.3", "--api-key-file"])
        .arg(&key_file)
        .arg("--spool")
        .arg(dir.join(format!("{name}.spool")))
        .args(extra)
        .stdin(Stdio::null());
    command
}

/// Runs an agent with `--once` and returns its output (bounded in time).
fn once(mut command: Command) -> Output {
    let mut child = command.arg("--once").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("the agent did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A collector over HTTPS with `leaf`, and a client that trusts the CA.
fn tls_collector(pki: &Pki, leaf: &Leaf, data: &Path) -> Collector {
    let (cert, key) = pki.install(leaf);
    let mut collector = Collector::start(
        data,
        &[
            "--no-local",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--tls-reload-every",
            "100ms",
        ],
    );
    assert!(collector.base.starts_with("https://127.0.0.1:"), "the startup line says https: {}", collector.base);
    let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.ca_file()).unwrap()).unwrap();
    collector.http = reqwest::Client::builder().add_root_certificate(ca).build().unwrap();
    collector
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_trust_the_collector_by_its_ca_or_its_pin_and_refuse_it_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let leaf = pki.leaf();
    let data = dir.path().join("data");
    let c = tls_collector(&pki, &leaf, &data);
    let token = c.admin_token().await;
    let key = new_key(&data, "tls", None);
    let ca = pki.ca_file();
    let ca = ca.to_str().unwrap();
    let right_pin = format!("sha256:{}", hex(&leaf.pin));
    let wrong_pin = format!("sha256:{}", hex(&[7u8; 32]));

    // Without the CA: the system's roots do not know it; the message says what to do.
    let out = once(agent(&c.base, &key, dir.path(), "no-ca", &[]));
    let text = stderr(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("certificate") && text.contains("--ca-cert"), "{text}");
    // The same over REST.
    let out = once(agent(&c.base, &key, dir.path(), "no-ca-rest", &["--transport", "rest"]));
    assert!(!out.status.success() && stderr(&out).contains("--ca-cert"), "{}", stderr(&out));

    // A wrong pin is refused even with the right CA.
    let out = once(agent(&c.base, &key, dir.path(), "wrong-pin", &["--ca-cert", ca, "--pin", &wrong_pin]));
    let text = stderr(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("is not the one pinned with --pin"), "{text}");
    assert_eq!(c.stored_count(&token).await, 0, "nothing was stored by refused agents");

    // The CA, over REST; the pin alone (no CA), over the WebSocket.
    let out = once(agent(&c.base, &key, dir.path(), "ca-rest", &["--ca-cert", ca, "--transport", "rest"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = once(agent(&c.base, &key, dir.path(), "pin-only", &["--pin", &right_pin]));
    assert!(out.status.success(), "{}", stderr(&out));

    // A streaming agent with the CA and the pin: its snapshots are stored.
    let mut streaming = agent(&c.base, &key, dir.path(), "ca-ws", &["--ca-cert", ca, "--pin", &right_pin])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut stored = 0;
    while started.elapsed() < Duration::from_secs(20) {
        let (status, list) = c.get("/api/process-snapshots/list/?hostname=ca-ws", &token).await;
        stored = if status == 200 { list.as_array().map_or(0, Vec::len) } else { 0 };
        if stored >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let _ = streaming.kill();
    let _ = streaming.wait();
    assert!(stored >= 3, "the agent over TLS stored {stored} snapshots");
    // With several collectors, the settings apply to each: here the second of the list,
    // after one where nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let list = format!("https://127.0.0.1:{closed},{}", c.base);
    let out = once(agent(&list, &key, dir.path(), "list-pin", &["--pin", &right_pin]));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = once(agent(&list, &key, dir.path(), "list-wrong-pin", &["--ca-cert", ca, "--pin", &wrong_pin]));
    let text = stderr(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("nothing listens") && text.contains("is not the one pinned with --pin"), "{text}");
    for host in ["ca-rest", "pin-only", "list-pin"] {
        let (status, _) = c.get(&format!("/api/process-snapshots/latest/?hostname={host}"), &token).await;
        assert_eq!(status, 200, "{host} stored its snapshot");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_certificate_files_are_served_to_new_connections_and_bad_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (first, second) = (pki.leaf(), pki.leaf());
    let data = dir.path().join("data");
    let mut c = tls_collector(&pki, &first, &data);
    let addr = c.base.trim_start_matches("https://").to_owned();
    assert_eq!(served_pin(&addr).await, first.pin);

    pki.install(&second);
    let started = Instant::now();
    while served_pin(&addr).await != second.pin {
        assert!(started.elapsed() < Duration::from_secs(10), "the new certificate was not picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A broken certificate file keeps the one that works.
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(served_pin(&addr).await, second.pin);
    let (status, _) = {
        let r = c.http.get(c.url("/api/health")).send().await.unwrap();
        (r.status().as_u16(), ())
    };
    assert_eq!(status, 200, "still served over TLS");
    assert!(c.stop(), "the collector stops cleanly over TLS");
}

#[test]
fn bad_tls_settings_stop_the_start_with_a_clear_error_and_touch_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (cert, key) = pki.install(&pki.leaf());
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap();
    let data = dir.path().join("data");
    let p = |p: &Path| p.to_str().unwrap().to_owned();
    let cases: [(Vec<String>, &str); 5] = [
        (vec!["--tls-cert".into(), p(&cert)], "--tls-cert and --tls-key go together"),
        (vec!["--tls-key".into(), p(&key)], "--tls-cert and --tls-key go together"),
        (vec!["--tls-cert".into(), p(&missing), "--tls-key".into(), p(&key)], "missing.pem"),
        (vec!["--tls-cert".into(), p(&cert), "--tls-key".into(), p(&garbage)], "garbage.pem"),
        (vec!["--tls-cert".into(), p(&key), "--tls-key".into(), p(&key)], "holds no certificate"),
    ];
    for (args, expected) in cases {
        let out = Command::new(BIN)
            .args(["serve", "--bind", "127.0.0.1:0", "--no-local", "--data"])
            .arg(&data)
            .args(&args)
            .env_remove("PROCYON_TLS_CERT")
            .env_remove("PROCYON_TLS_KEY")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(text.contains(expected), "{args:?}: {text}");
        assert!(!data.join("procyon.db").exists(), "{args:?} opened the database");
    }
}
