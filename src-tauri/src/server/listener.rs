//! The collector's listener: accepts TCP connections, wraps them in TLS when it has a
//! certificate, and serves the router over HTTP/1.1 with WebSocket upgrades.
//!
//! `axum::serve` can do neither TLS nor timeouts, so this is a small accept loop of its
//! own, with the limits that keep a slow or hostile client from holding the collector's
//! sockets (slowloris):
//!
//! - the TLS handshake and each request's headers must arrive within
//!   [`Limits::header_read_timeout`]; hyper's timer also runs while a keep-alive
//!   connection waits for its next request, so that is the idle limit too;
//! - a request's whole body must arrive within [`Limits::body_timeout`] of its headers;
//! - at most [`Limits::max_connections`] connections are open at once (upgraded
//!   WebSockets included, since each holds a socket); past that, new ones wait in the
//!   kernel's backlog until one closes;
//! - one client address (an IPv6 client: its /64) holds at most
//!   [`Limits::max_per_address`] of them; one more is answered `429` at once and closed,
//!   so that no single client can take every slot;
//! - [`Limits::reserve`] more connections are kept for clients that hold few (fewer than
//!   [`Limits::light_client`]): when every ordinary slot is taken, someone signing in (an
//!   admin come to revoke a key, say) still gets in, while a client that already holds
//!   many is answered `503` at once.
//!
//! - a write that makes no progress for [`Limits::write_timeout`] (a client that sends a
//!   request and never reads the answer, or stops reading a WebSocket) ends the
//!   connection, so that no answer holds a task and its memory for ever;
//! - behind a reverse proxy named in [`Limits::trusted_proxies`], the client's address is
//!   taken from `X-Forwarded-For` (see [`client_ip`]) for sign-in throttling and logs, and
//!   the proxy itself is not held to the per-address share (every client comes through
//!   it); from any other peer that header is ignored.
//!
//! - a handler may bound what a connection still sends ([`ReadCap`]): the agent channel
//!   reads a hello of at most a few KiB before the socket's frame limit applies;
//!
//! Upgraded WebSockets leave hyper once upgraded, so the header and body timeouts do not
//! apply to them (the write timeout does).
//! The certificate is reloaded when its files change (polled) or on SIGHUP; a bad new
//! file keeps the old certificate and says why in the log.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tower::ServiceExt;

/// How long a client may take, and how many may be connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The TLS handshake, and each request's line and headers (also the idle limit of a
    /// keep-alive connection between requests).
    pub header_read_timeout: Duration,
    /// A request's whole body, from its headers on.
    pub body_timeout: Duration,
    /// Connections open at once; more wait until one closes (but see `reserve`).
    pub max_connections: usize,
    /// Connections one client address (an IPv6 client: its /64) may hold at once; one
    /// more is refused with 429.
    pub max_per_address: usize,
    /// Connections beyond `max_connections` for clients that hold fewer than
    /// `light_client`, taken only when every ordinary slot is.
    pub reserve: usize,
    /// A client holding fewer connections than this may use the reserve (a browser opens
    /// up to six to one server).
    pub light_client: usize,
    /// Longest a write to a client may wait without any progress before the connection is
    /// closed (the client stopped reading).
    pub write_timeout: Duration,
    /// Reverse proxies whose `X-Forwarded-For` names the client (none by default).
    pub trusted_proxies: Arc<[IpAddr]>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 4096,
            max_per_address: 512,
            reserve: 64,
            light_client: 8,
            write_timeout: Duration::from_secs(30),
            trusted_proxies: Arc::new([]),
        }
    }
}

/// Where the certificate and its key are, and how often to look for new ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// The PEM private key (PKCS#8, RSA or SEC1).
    pub key: PathBuf,
    /// How often the files' modification times are compared.
    pub reload_every: Duration,
}

impl TlsFiles {
    /// `cert` and `key`, looked at every five seconds.
    pub fn new(cert: PathBuf, key: PathBuf) -> TlsFiles {
        TlsFiles { cert, key, reload_every: Duration::from_secs(5) }
    }
}

/// A loaded certificate that follows its files.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    current: Arc<Current>,
}

/// The certificate served to new connections; swapped on reload.
#[derive(Debug)]
struct Current {
    files: TlsFiles,
    key: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    /// Reads the certificate and key; the error names the file that is wrong and how.
    pub fn load(files: &TlsFiles) -> anyhow::Result<Tls> {
        let key = load_key(&files.cert, &files.key)?;
        let current = Arc::new(Current { files: files.clone(), key: RwLock::new(Arc::new(key)) });
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("cannot set up TLS")?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // HTTP/1.1 only: WebSockets upgrade over it, and it is all this listener speaks.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls { acceptor: TlsAcceptor::from(Arc::new(config)), current })
    }

    /// Loads the files again; on failure the old certificate stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let key = load_key(&self.current.files.cert, &self.current.files.key)?;
        *self.current.key.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        Ok(())
    }

    /// Reloads whenever the files' modification time or size changes, and on SIGHUP,
    /// until the task is aborted.
    async fn follow(self) {
        let files = &self.current.files;
        let mut seen = stamp(files);
        #[cfg(unix)]
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let hup = async {
                match hangup.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hup = std::future::pending::<()>();
            tokio::select! {
                () = tokio::time::sleep(files.reload_every) => {
                    let now = stamp(files);
                    if now == seen {
                        continue;
                    }
                    seen = now;
                }
                () = hup => tracing::info!("SIGHUP: reloading the TLS certificate"),
            }
            match self.reload() {
                Ok(()) => tracing::info!(cert = %files.cert.display(), "reloaded the TLS certificate"),
                Err(e) => tracing::warn!("kept the previous TLS certificate: {e:#}"),
            }
        }
    }
}

/// What tells that a file changed: its modification time and size (`None`: unreadable).
fn stamp(files: &TlsFiles) -> [Option<(SystemTime, u64)>; 2] {
    let one = |path: &Path| std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
    [one(&files.cert), one(&files.key)]
}

/// Reads a certificate chain and its key, checking that they belong together.
fn load_key(cert_path: &Path, key_path: &Path) -> anyhow::Result<CertifiedKey> {
    let pem =
        std::fs::read(cert_path).with_context(|| format!("cannot read the TLS certificate {}", cert_path.display()))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("the TLS certificate {} is not valid PEM: {e}", cert_path.display()))?;
    if chain.is_empty() {
        anyhow::bail!(
            "the TLS certificate {} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----, leaf first)",
            cert_path.display()
        );
    }
    let pem = std::fs::read(key_path).with_context(|| format!("cannot read the TLS key {}", key_path.display()))?;
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        anyhow::anyhow!("the TLS key {} holds no private key in PEM (PKCS#8, RSA or SEC1 EC): {e}", key_path.display())
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| anyhow::anyhow!("the TLS key {} cannot be used: {e}", key_path.display()))?;
    let key = CertifiedKey::new(chain, signing);
    match key.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(key),
        Err(_) => anyhow::bail!(
            "the TLS key {} does not belong to the certificate {} (its first certificate must be the one for this key)",
            key_path.display(),
            cert_path.display()
        ),
    }
}

/// Raises the soft limit on open files to the hard one, so that the connection cap, not a
/// default limit of 1024 files, is what bounds connections; warns when even the hard
/// limit is below the cap (then the system refuses connections before the cap does).
pub fn raise_fd_limit(max_connections: usize) {
    #[cfg(unix)]
    {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return };
        if soft < hard {
            // Refused where the hard limit is "unlimited" but the kernel's is lower:
            // the soft limit then stays as it was.
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
        let open_files = getrlimit(Resource::RLIMIT_NOFILE).map(|(soft, _)| soft).unwrap_or(soft);
        // Room for the database, the logs and the listener itself.
        let needed = u64::try_from(max_connections).unwrap_or(u64::MAX).saturating_add(64);
        // rlim_t is u64 on Linux but not on every Unix.
        #[allow(clippy::useless_conversion)]
        let open_files = u64::from(open_files);
        if open_files < needed {
            tracing::warn!(
                open_files,
                max_connections,
                "the open-file limit is below --max-connections plus what the collector needs itself; \
                 raise it (systemd: LimitNOFILE=) or lower --max-connections"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = max_connections;
}

/// Open connections per client address (see [`client_key`]), each entry removed when
/// its last connection closes.
#[derive(Clone, Default)]
struct Addresses(Arc<Mutex<HashMap<IpAddr, usize>>>);

impl Addresses {
    fn held(&self, client: IpAddr) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(&client).copied().unwrap_or(0)
    }

    fn open(&self, client: IpAddr) -> AddressSlot {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()).entry(client).or_insert(0) += 1;
        AddressSlot { addresses: self.clone(), client }
    }
}

/// One connection counted against its client's address, for as long as it is open.
struct AddressSlot {
    addresses: Addresses,
    client: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self.addresses.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = map.get_mut(&self.client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                map.remove(&self.client);
            }
        }
    }
}

/// The address a client is counted under: an IPv6 client holds a whole /64 (it can pick
/// any address in it), and an IPv4 client over IPv6 is its IPv4 address.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}

/// A connection slot: an ordinary one, or one of the reserve.
enum Slot {
    Ordinary(OwnedSemaphorePermit),
    Reserve(OwnedSemaphorePermit),
}

/// Refusals answered at once; past this many in progress, a refused connection is just
/// closed (a flood must not make work of its own).
const REFUSALS_AT_ONCE: usize = 64;

/// How long answering a refused connection may take, TLS handshake included.
const REFUSAL_TIME: Duration = Duration::from_secs(3);

/// Serves `router` on `listener` until `stop` completes, then lets open requests finish.
pub async fn run(
    router: Router,
    listener: TcpListener,
    limits: Limits,
    tls: Option<Tls>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let reloader = tls.clone().map(|tls| tokio::spawn(tls.follow()));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let reserve = Arc::new(Semaphore::new(limits.reserve));
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let addresses = Addresses::default();
    let (closing, closed) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut slot: Option<Slot> = None;
    let mut full_warned: Option<Instant> = None;
    let mut address_warned: Option<Instant> = None;
    let warn_again = |t: Option<Instant>| t.is_none_or(|t| t.elapsed() > Duration::from_secs(60));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            () = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            acquired = permits.clone().acquire_owned(), if slot.is_none() => {
                slot = Some(Slot::Ordinary(acquired.context("the connection limit is gone")?));
            }
            // Only once every ordinary slot is taken (`biased`: ordinary ones come first).
            acquired = reserve.clone().acquire_owned(), if slot.is_none() && permits.available_permits() == 0 => {
                slot = Some(Slot::Reserve(acquired.context("the connection reserve is gone")?));
                if warn_again(full_warned) {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "every connection slot is in use; clients holding few connections get the reserve, others \
                         are refused or wait until one closes (--max-connections)"
                    );
                    full_warned = Some(Instant::now());
                }
            }
            accepted = listener.accept(), if slot.is_some() => match accepted {
                Ok((stream, remote)) => {
                    let Some(mut taken) = slot.take() else { continue };
                    // A reserve slot taken while the collector was full, and an ordinary
                    // one free again by now: the client gets the ordinary one.
                    if matches!(taken, Slot::Reserve(_))
                        && let Ok(ordinary) = permits.clone().try_acquire_owned()
                    {
                        taken = Slot::Ordinary(ordinary);
                    }
                    let _ = stream.set_nodelay(true);
                    let client = client_key(remote.ip());
                    let held = addresses.held(client);
                    // A trusted proxy carries many clients: the per-address share is not its.
                    let proxy = limits.trusted_proxies.contains(&unmapped(remote.ip()));
                    let refusal = if held >= limits.max_per_address && !proxy {
                        if warn_again(address_warned) {
                            tracing::warn!(
                                client = %client,
                                max_per_address = limits.max_per_address,
                                "a client reached its share of connections and was refused one more \
                                 (--max-connections-per-address; behind a reverse proxy every client has its address)"
                            );
                            address_warned = Some(Instant::now());
                        }
                        Some(Refusal::PerAddress(limits.max_per_address))
                    } else if matches!(taken, Slot::Reserve(_)) && held >= limits.light_client {
                        Some(Refusal::Full)
                    } else {
                        None
                    };
                    if let Some(refusal) = refusal {
                        drop(taken);
                        if let Ok(turn) = refusals.clone().try_acquire_owned() {
                            let tls = tls.clone();
                            connections.spawn(async move {
                                let _turn = turn;
                                let _ = tokio::time::timeout(REFUSAL_TIME, refusal.answer(stream, tls)).await;
                            });
                        }
                        continue;
                    }
                    let permit = match taken {
                        Slot::Ordinary(p) | Slot::Reserve(p) => p,
                    };
                    let read_cap = ReadCap::default();
                    let io = Counted {
                        stream,
                        _permit: permit,
                        _address: addresses.open(client),
                        write_timeout: limits.write_timeout,
                        stalled: None,
                        read_cap: read_cap.clone(),
                    };
                    let connection = Connection {
                        router: router.clone(),
                        http: http.clone(),
                        remote,
                        limits: limits.clone(),
                        closed: closed.clone(),
                        read_cap,
                    };
                    let tls = tls.clone();
                    let header_read_timeout = limits.header_read_timeout;
                    connections.spawn(async move {
                        match tls {
                            None => connection.serve(io).await,
                            Some(tls) => {
                                match tokio::time::timeout(header_read_timeout, tls.acceptor.accept(io)).await {
                                    Ok(Ok(io)) => connection.serve(io).await,
                                    Ok(Err(e)) => tracing::debug!(%remote, "TLS handshake failed: {e}"),
                                    Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                                }
                            }
                        }
                    });
                }
                // Out of file descriptors, or a connection reset before it was
                // accepted: wait a little rather than spin, and go on.
                Err(e) => {
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    closing.send_replace(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Why a connection is refused at once.
#[derive(Clone, Copy)]
enum Refusal {
    /// Its address holds its share already.
    PerAddress(usize),
    /// Every slot is taken, and this client holds many already.
    Full,
}

impl Refusal {
    /// The answer to every request on the refused connection: 429 or 503 with
    /// `Retry-After` and the error shape of every other answer, then the connection
    /// closes. Over TLS the handshake comes first, so that the client can read it.
    async fn answer(self, stream: TcpStream, tls: Option<Tls>) {
        match tls {
            None => self.serve(stream).await,
            Some(tls) => {
                if let Ok(stream) = tls.acceptor.accept(stream).await {
                    self.serve(stream).await;
                }
            }
        }
    }

    async fn serve<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (status, code, message) = match self {
            Refusal::PerAddress(max) => (
                hyper::StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections",
                format!(
                    "Your address already holds {max} connections to this collector, the most one client may; close \
                     some (or, for a reverse proxy or a NAT in front of many agents, raise \
                     --max-connections-per-address)."
                ),
            ),
            Refusal::Full => (
                hyper::StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "This collector holds as many connections as it may (--max-connections); try again shortly.".into(),
            ),
        };
        let body = serde_json::json!({ "error": code, "message": message }).to_string();
        let service = hyper::service::service_fn(move |_request: hyper::Request<Incoming>| {
            let response = hyper::Response::builder()
                .status(status)
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .header(hyper::header::RETRY_AFTER, "5")
                .header(hyper::header::CONNECTION, "close")
                .body(axum::body::Body::from(body.clone()));
            async move { response }
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new()).header_read_timeout(REFUSAL_TIME).keep_alive(false);
        let _ = http.serve_connection(TokioIo::new(io), service).await;
    }
}

/// What one connection's task needs.
struct Connection {
    router: Router,
    http: hyper::server::conn::http1::Builder,
    remote: SocketAddr,
    limits: Limits,
    closed: watch::Receiver<bool>,
    read_cap: ReadCap,
}

impl Connection {
    async fn serve<I>(mut self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection { router, remote, limits, read_cap, .. } = self;
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            // Handlers may ask who is calling, as with axum's own server, and who the
            // client is behind a trusted proxy.
            let client = client_ip(remote.ip(), request.headers(), &limits.trusted_proxies);
            request.extensions_mut().insert(ConnectInfo(remote));
            request.extensions_mut().insert(ClientIp(client));
            request.extensions_mut().insert(read_cap.clone());
            let request = request.map(|body| axum::body::Body::new(Deadline::new(body, limits.body_timeout)));
            router.clone().oneshot(request)
        });
        let connection = self.http.serve_connection(TokioIo::new(io), service).with_upgrades();
        tokio::pin!(connection);
        let closing = async {
            // The Ref it returns must not live across the await below.
            let _ = self.closed.wait_for(|closing| *closing).await;
        };
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = closing => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(e) = result {
            // Timeouts and clients that hang up are routine; nothing to alarm anyone.
            tracing::debug!(%remote, "connection ended: {e}");
        }
    }
}

/// The address of the client a request is from: its peer's, or, when the peer is a
/// trusted proxy, the one `X-Forwarded-For` names. Put in each request's extensions by
/// the listener (extensions never come off the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// The client behind `peer`: `peer` itself unless it is one of `trusted`; then the
/// rightmost `X-Forwarded-For` entry that is not a trusted proxy (each proxy appends the
/// address it got the request from, so entries left of an untrusted one may be forged).
/// An entry that is not an address stops the walk at the proxy that wrote it.
pub fn client_ip(peer: IpAddr, headers: &hyper::HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let peer = unmapped(peer);
    if !trusted.contains(&peer) {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for entry in entries.iter().rev() {
        let Some(ip) = parse_forwarded(entry) else { break };
        client = ip;
        if !trusted.contains(&ip) {
            break;
        }
    }
    client
}

/// An `X-Forwarded-For` entry: an address, maybe with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    entry.parse::<IpAddr>().ok().or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip())).map(unmapped)
}

/// An IPv4 client over IPv6 as its IPv4 address, as trusted proxies are named.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// How many more bytes a connection may read, when a handler bounds it (an agent's
/// WebSocket before its hello, which is small: a larger one must not be buffered whole
/// first). Unbounded unless set; shared by the connection's stream and, through each
/// request's extensions, its handlers.
#[derive(Clone, Debug)]
pub struct ReadCap(Arc<std::sync::atomic::AtomicU64>);

impl Default for ReadCap {
    fn default() -> Self {
        ReadCap(Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX)))
    }
}

impl ReadCap {
    /// From now on, at most `bytes` more may be read; past them reads fail.
    pub fn limit(&self, bytes: u64) {
        self.0.store(bytes.min(u64::MAX - 1), std::sync::atomic::Ordering::SeqCst);
    }

    /// Reads are unbounded again.
    pub fn lift(&self) {
        self.0.store(u64::MAX, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether a bound is set and every byte of it was read.
    pub fn reached(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst) == 0
    }
}

/// A TCP stream that holds one connection slot, and counts against its client's
/// address, for as long as it is open, through an upgrade to a WebSocket too. A write
/// that makes no progress for `write_timeout` fails, which ends the connection: a
/// client that stops reading cannot hold the task that answers it.
struct Counted {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    _address: AddressSlot,
    write_timeout: Duration,
    /// Since when writes have been waiting, if they are.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    read_cap: ReadCap,
}

impl Counted {
    /// The result of a write attempt, timed: progress ends the stall, waiting fails once
    /// it has lasted `write_timeout`.
    fn timed<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let limit = self.write_timeout;
        let stall = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if stall.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {} s", limit.as_secs_f64()),
            )));
        }
        Poll::Pending
    }
}

impl AsyncRead for Counted {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let cap = this.read_cap.0.load(std::sync::atomic::Ordering::SeqCst);
        if cap == u64::MAX {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        }
        if cap == 0 {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "more than this connection may send")));
        }
        // Bounded: a small read into a buffer of our own (only while a handler bounds
        // the connection, briefly), so that no byte past the bound is taken.
        let mut bytes = [0u8; 4096];
        let room = buf.remaining().min(bytes.len()).min(usize::try_from(cap).unwrap_or(usize::MAX));
        let mut limited = ReadBuf::new(&mut bytes[..room]);
        match Pin::new(&mut this.stream).poll_read(cx, &mut limited) {
            Poll::Ready(Ok(())) => {
                let read = limited.filled();
                buf.put_slice(read);
                this.read_cap.0.fetch_sub(read.len() as u64, std::sync::atomic::Ordering::SeqCst);
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl AsyncWrite for Counted {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.timed(cx, polled)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_flush(cx);
        this.timed(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.timed(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// A request body that must arrive whole by a deadline. tower-http's body timeout
/// restarts with every frame, so a client sending a byte at a time would never meet it.
struct Deadline {
    body: Incoming,
    limit: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Deadline {
    fn new(body: Incoming, limit: Duration) -> Deadline {
        // No timer for bodiless requests (most of them, WebSocket upgrades included).
        let deadline = (!body.is_end_stream()).then(|| Box::pin(tokio::time::sleep(limit)));
        Deadline { body, limit, deadline }
    }
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if let Some(deadline) = &mut this.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            let message = format!("the request body did not arrive within {} s", this.limit.as_secs_f64());
            return Poll::Ready(Some(Err(message.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn bad_certificate_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let a = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = write(dir.path(), "cert.pem", &a.cert.pem());
        let key = write(dir.path(), "key.pem", &a.key_pair.serialize_pem());
        let other_key = write(dir.path(), "other.pem", &b.key_pair.serialize_pem());
        let empty = write(dir.path(), "empty.pem", "");
        let junk = write(dir.path(), "junk.pem", "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n");
        let missing = dir.path().join("missing.pem");
        assert!(load_key(&cert, &key).is_ok());
        let cases = [
            (&missing, &key, "cannot read the TLS certificate", &missing),
            (&cert, &missing, "cannot read the TLS key", &missing),
            (&empty, &key, "holds no certificate", &empty),
            (&junk, &key, "is not valid PEM", &junk),
            (&key, &key, "holds no certificate", &key),
            (&cert, &cert, "holds no private key", &cert),
            (&cert, &other_key, "does not belong to the certificate", &other_key),
        ];
        for (cert, key, expected, named) in cases {
            let err = format!("{:#}", load_key(cert, key).err().unwrap());
            assert!(err.contains(expected), "{err}");
            assert!(err.contains(&named.display().to_string()), "{err}");
        }
    }
}
