//! The collector's HTTP side: thin axum adapters over the store, the hub and control.
//!
//! [`app`] builds the whole router from an [`AppState`], so tests drive it without a
//! socket; [`serve`] binds it, runs the background tasks (local sampling, rollups) and
//! shuts down gracefully on SIGINT or SIGTERM, closing the store last so nothing
//! accepted is lost.
//!
//! - `routes.rs`: every route in one table, with who may call it;
//! - `listener.rs`: the accept loop: TLS, header and body timeouts, the connection cap;
//! - `rest.rs`: every REST endpoint (both original APIs and ours);
//! - `ws.rs`: the live WebSockets, fed by the hub;
//! - `agents.rs`: the agent channel (`/ws/agent`) and action relay;
//! - `auth.rs`: users, tokens, API keys; `binding.rs`: which key and machine may report
//!   as a host; `error.rs`: the one error shape;
//! - `upload.rs`: reading and checking uploads; `views.rs`: the original APIs' shapes;
//! - `openapi.rs`: the OpenAPI document;
//! - `metrics.rs`: `GET /metrics` for Prometheus.
//! - `alerts.rs`: the alert API (rules, channels, alerts, history, silences).
//! - `assets.rs`: the dashboard (`ui/dist`, embedded), under a strict CSP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::http::{HeaderValue, header};
use chrono::Utc;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::hub::{Hub, Published};
use crate::model::Snapshot;
use crate::model::api::{HostSummary, Role};
use crate::sample::{CmdlineMode, Sampler, SamplerOptions};
use crate::store::{Inserted, Retention, Store};

pub mod address;
pub mod agents;
pub mod alerts;
pub mod assets;
pub mod auth;
pub mod binding;
pub mod dashboards;
pub mod details;
pub mod error;
pub mod fleet;
pub mod fleet_search;
pub mod listener;
pub mod metrics;
pub mod network_map;
pub mod openapi;
pub mod query;
pub mod rest;
pub mod routes;
pub mod upload;
pub mod views;
pub mod ws;

use error::ApiError;
pub use listener::{Limits, Tls, TlsFiles};

/// How the collector runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Local sampling interval; also the live stream's pace.
    pub interval: Duration,
    /// The collector's own host name when it samples its own machine.
    pub local_hostname: Option<String>,
    /// How long each history tier is kept.
    pub retention: Retention,
    /// How long a sign-in token lives.
    pub token_ttl: Duration,
    /// How much of each command line the local sampler reports.
    pub cmdline: CmdlineMode,
    /// Live streams (dashboards' WebSockets) one user may hold open at once.
    pub max_streams_per_user: usize,
    /// Agent sessions one API key may hold at once: well below `max_agent_sessions`, so
    /// that one leaked fleet key cannot take every session.
    pub max_sessions_per_key: usize,
    /// Agent sessions at once, over all keys.
    pub max_agent_sessions: usize,
    /// Hosts one API key may bind.
    pub max_hosts_per_key: i64,
    /// Process groups per host on `/metrics`.
    pub metrics_groups: usize,
    /// What processes are grouped by on `/metrics`.
    pub metrics_group_by: crate::metrics::GroupBy,
    /// Groups made by filters on `/metrics` (`--metrics-group NAME=FILTER`).
    pub metrics_named_groups: Arc<[crate::metrics::NamedGroup]>,
    /// How often agents are pinged; a session silent for three of these is closed.
    pub agent_ping_every: Duration,
    /// Bytes of agent frames decoded at once, over all sessions.
    pub agent_decode_budget: usize,
    /// About how much memory the hosts' newest snapshots may hold together
    /// ([`Hub::held_bytes`]): past it, hosts the collector does not hold yet are refused
    /// (503) until others leave, so a flood of made-up hosts cannot exhaust memory.
    pub max_live_memory: usize,
    /// The database (`--database`); `None`: SQLite, `procyon.db` in the data directory.
    pub database: Option<crate::store::Database>,
    /// Read-only alert rules and channels (`--alerts FILE`, TOML).
    pub alerts_file: Option<PathBuf>,
}

/// [`Settings::max_live_memory`] unless told otherwise: a quarter of the machine's
/// memory, and at least 256 MiB.
pub fn default_live_memory() -> usize {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<usize>().ok()
        })
        .map_or(4 << 30, |kib| kib.saturating_mul(1024));
    (total / 4).max(256 << 20)
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            interval: Duration::from_secs(2),
            local_hostname: None,
            retention: Retention::default(),
            token_ttl: Duration::from_secs(3600),
            cmdline: CmdlineMode::Full,
            max_streams_per_user: ws::MAX_STREAMS_PER_USER,
            max_sessions_per_key: agents::MAX_SESSIONS_PER_KEY,
            max_agent_sessions: agents::MAX_SESSIONS,
            max_hosts_per_key: binding::MAX_HOSTS_PER_KEY,
            metrics_groups: crate::metrics::DEFAULT_GROUPS,
            metrics_group_by: crate::metrics::GroupBy::Name,
            metrics_named_groups: Vec::new().into(),
            agent_ping_every: agents::PING_EVERY,
            agent_decode_budget: agents::DECODE_BUDGET_BYTES,
            max_live_memory: 1 << 30,
            database: None,
            alerts_file: None,
        }
    }
}

/// Everything a handler may need. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// History, accounts, audit.
    pub store: Store,
    /// Live fan-out.
    pub hub: Hub,
    /// Tokens and sign-in throttling.
    pub auth: Arc<auth::Auth>,
    /// Configuration.
    pub settings: Arc<Settings>,
    /// Connected agents.
    pub agents: Arc<agents::Agents>,
    /// Which key and machine each host belongs to, as far as already settled.
    pub bindings: Arc<binding::Bindings>,
    /// The room REST uploads share (bytes in memory, parsing slots).
    pub uploads: Arc<upload::UploadGate>,
    /// Live streams open, per user.
    pub streams: Arc<ws::StreamCounts>,
    /// What `/metrics` counts between scrapes.
    pub counters: Arc<metrics::Counters>,
    /// `/metrics` scrapes built lately, shared by scrapers.
    pub scrapes: Arc<metrics::Scrapes>,
    /// What the other collectors on the database announced (PostgreSQL).
    pub fleet: Arc<fleet::Fleet>,
    /// Alert rules, channels and silences in force, and their evaluation.
    pub alerts: Arc<crate::alert::service::Alerts>,
    /// Process details requests per user, for their rate limit.
    pub details: Arc<details::DetailsGate>,
    key_touches: Arc<Mutex<std::collections::HashMap<i64, Instant>>>,
    refusals: Arc<Mutex<std::collections::HashMap<String, Instant>>>,
    shutdown: Arc<tokio::sync::watch::Sender<bool>>,
}

impl AppState {
    /// State over an opened store.
    pub fn new(store: Store, hub: Hub, auth: auth::Auth, settings: Settings) -> AppState {
        let agents = Arc::new(agents::Agents::new(settings.agent_decode_budget));
        AppState {
            alerts: Arc::new(crate::alert::service::Alerts::new(store.clone())),
            store,
            hub,
            auth: Arc::new(auth),
            settings: Arc::new(settings),
            agents,
            fleet: Arc::default(),
            bindings: Arc::default(),
            uploads: Arc::default(),
            streams: Arc::default(),
            counters: Arc::default(),
            scrapes: Arc::default(),
            details: Arc::default(),
            key_touches: Arc::default(),
            refusals: Arc::default(),
            shutdown: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    /// Changes when the collector starts shutting down; long-lived handlers (WebSockets)
    /// end then, so that graceful shutdown does not wait on them forever.
    pub fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// The same state with its own shutdown signal: a second listener over the same
    /// store and hub (the desktop's built-in collector) can be stopped and started again
    /// without ending the app's other streams.
    pub fn with_own_shutdown(&self) -> AppState {
        AppState { shutdown: Arc::new(tokio::sync::watch::channel(false).0), ..self.clone() }
    }

    /// Tells long-lived handlers to finish.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Stores a snapshot and, unless it was a duplicate, publishes it live.
    ///
    /// Every command line is redacted again first, whoever sent it: an old agent, or one
    /// that does not redact, must not get secrets stored or shown. For a line that was
    /// redacted already this is a scan without allocation.
    ///
    /// Refused (and nothing stored): a snapshot taken before the epoch or so long ago
    /// that retention would delete it at once; a `seq` that runs ahead of the host's
    /// history by more than time allows (it would make every later snapshot look like a
    /// duplicate); and a "duplicate" whose content differs from the stored snapshot of
    /// that seq (two senders numbering alike: 409, never silently dropped).
    pub async fn ingest(&self, mut snapshot: Snapshot) -> Result<Inserted, ApiError> {
        for p in &mut snapshot.processes {
            crate::sample::redact::redact_in_place(&mut p.cmd);
        }
        self.ingest_redacted(Arc::new(snapshot)).await
    }

    /// [`AppState::ingest`] of a snapshot whose command lines are redacted already. The
    /// same `Arc` is published, so a caller may keep it (as a delta base) without a copy.
    pub async fn ingest_redacted(&self, snapshot: Arc<Snapshot>) -> Result<Inserted, ApiError> {
        self.ingest_sent(snapshot, None).await
    }

    /// [`AppState::ingest_redacted`] with the bytes its sender encoded it in, which the
    /// store keeps as they came when they fit (the agent channel redacts what a delta
    /// changed, on its decoding thread, and passes its frame's bytes).
    pub async fn ingest_sent(
        &self,
        snapshot: Arc<Snapshot>,
        sent: Option<crate::store::Sent>,
    ) -> Result<Inserted, ApiError> {
        let started = Instant::now();
        let result = self.ingest_timed(snapshot, sent).await;
        match &result {
            Ok(_) => self.counters.ingested(started.elapsed()),
            Err(e) => self.counters.refused(e),
        }
        result
    }

    async fn ingest_timed(
        &self,
        snapshot: Arc<Snapshot>,
        sent: Option<crate::store::Sent>,
    ) -> Result<Inserted, ApiError> {
        let received_at = Utc::now();
        self.check_sequence(&snapshot, received_at).await?;
        self.check_live_memory(&snapshot)?;
        let inserted = self.store.insert_sent(&snapshot, received_at, sent).await?;
        if inserted.duplicate {
            let stored = self.store.snapshot(inserted.id).await?;
            if stored.is_some_and(|s| s.snapshot != *snapshot) {
                return Err(ApiError::Conflict {
                    code: "seq_conflict",
                    message: format!(
                        "Host `{}` already has a different snapshot with seq {}: two senders number their snapshots \
                         alike (two agents with one host name?). Nothing was stored.",
                        snapshot.host.hostname, snapshot.seq
                    ),
                });
            }
        } else {
            self.hub.publish(Published::new(inserted.id, inserted.host_id, received_at, snapshot));
        }
        Ok(inserted)
    }

    /// Refuses a host the hub does not hold yet when its snapshot would take the memory
    /// the hosts' newest snapshots hold past [`Settings::max_live_memory`]. Hosts already
    /// held go on (their new snapshot replaces the old one), and room comes back as
    /// hosts leave (their agent goes, or they stay silent for minutes).
    fn check_live_memory(&self, snapshot: &Snapshot) -> Result<(), ApiError> {
        let hostname = &snapshot.host.hostname;
        if self.hub.holds(hostname) {
            return Ok(());
        }
        let held = self.hub.held_bytes();
        let bytes = crate::hub::approximate_bytes(snapshot);
        if held.saturating_add(bytes) <= self.settings.max_live_memory {
            return Ok(());
        }
        if self.first_refusal_this_minute("\0live-memory") {
            tracing::warn!(
                %hostname,
                held_mib = held >> 20,
                limit_mib = self.settings.max_live_memory >> 20,
                "refused a new host: the hosts' newest snapshots hold as much memory as --max-live-memory-mib allows"
            );
        }
        Err(ApiError::Busy {
            retry_after_secs: 60,
            message: format!(
                "The collector holds as many hosts' live snapshots as its memory budget allows \
                 (--max-live-memory-mib {}), so it takes no new host now; `{hostname}` may try again later.",
                self.settings.max_live_memory >> 20
            ),
        })
    }

    /// The time and sequence checks of [`AppState::ingest`].
    pub async fn check_sequence(&self, snapshot: &Snapshot, now: chrono::DateTime<Utc>) -> Result<(), ApiError> {
        if snapshot.taken_at < chrono::DateTime::UNIX_EPOCH {
            return Err(ApiError::invalid("taken_at", "taken_at is before 1970."));
        }
        let retention = &self.settings.retention;
        let longest = retention.raw.max(retention.minute).max(retention.hour);
        if let Ok(longest) = chrono::Duration::from_std(longest)
            && snapshot.taken_at < now - longest
        {
            return Err(ApiError::invalid(
                "taken_at",
                format!(
                    "taken_at ({}) is older than the longest history kept ({} days): it would be deleted at once.",
                    snapshot.taken_at.to_rfc3339(),
                    longest.num_days()
                ),
            ));
        }
        if snapshot.seq > i64::MAX as u64 {
            return Err(ApiError::invalid("seq", format!("seq must be at most {}.", i64::MAX)));
        }
        // How far a host's seq may run ahead: agents count one per snapshot, seed-style
        // uploads use their time in milliseconds; neither moves faster than the clock.
        // So a seq may exceed the host's newest by the milliseconds since it was seen,
        // plus a day for clocks that disagree.
        const DAY_MS: i64 = 24 * 3600 * 1000;
        let (last_seq, last_seen) = match self.hub.latest(&snapshot.host.hostname) {
            Some(p) => (i64::try_from(p.snapshot.seq).unwrap_or(i64::MAX), p.received_at),
            None => match self.store.host(&snapshot.host.hostname).await? {
                Some(h) if h.hostname == snapshot.host.hostname => {
                    let next = self.store.next_seq(&snapshot.host.hostname).await?;
                    (i64::try_from(next.saturating_sub(1)).unwrap_or(i64::MAX), h.last_seen)
                }
                _ => (0, chrono::DateTime::UNIX_EPOCH),
            },
        };
        let elapsed = (now - last_seen).num_milliseconds().max(0);
        let limit = last_seq.saturating_add(elapsed).saturating_add(DAY_MS);
        if snapshot.seq as i64 > limit {
            return Err(ApiError::invalid(
                "seq",
                // No numbers of the host's history in the answer all the same (uploads
                // are admitted before this check, but other callers may not be).
                format!(
                    "seq {} runs too far ahead of this host's history (more than the time since it last reported \
                     allows). An agent that lost its state continues from the collector's number; seed-style \
                     uploads use their time.",
                    snapshot.seq
                ),
            ));
        }
        Ok(())
    }

    /// Whether `username` had no refused action audited in the last minute (and notes
    /// one now): refusals are audited at that pace at most.
    pub fn first_refusal_this_minute(&self, username: &str) -> bool {
        let mut refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        if refusals.get(username).is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
            return false;
        }
        if refusals.len() >= 10_000 {
            refusals.retain(|_, t| t.elapsed() < Duration::from_secs(60));
        }
        refusals.insert(username.to_owned(), Instant::now());
        true
    }

    /// Notes that an API key was used, at most once a minute per key.
    pub fn touch_key(&self, key: &crate::model::api::ApiKeySummary) {
        let mut touches = self.key_touches.lock().unwrap_or_else(|p| p.into_inner());
        if touches.get(&key.id).is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
            return;
        }
        touches.insert(key.id, Instant::now());
        let store = self.store.clone();
        let id = key.id;
        tokio::spawn(async move {
            if let Err(e) = store.touch_api_key(id, Utc::now()).await {
                tracing::warn!("cannot note API key use: {e}");
            }
        });
    }

    /// Finds a host by `server_id`: its id, its host name, or `local`.
    pub async fn resolve_host(&self, server_id: &str) -> Result<HostSummary, ApiError> {
        let key = if server_id == "local" {
            self.settings.local_hostname.as_deref().ok_or_else(|| {
                ApiError::NotFound("This collector does not sample its own machine (it runs with --no-local).".into())
            })?
        } else {
            server_id
        };
        let mut host = self
            .store
            .host(key)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("No host `{server_id}` has reported to this collector.")))?;
        self.decorate(&mut host);
        Ok(host)
    }

    /// Whether `hostname` reports now: its agent is connected, or it sent a snapshot
    /// within three intervals (at least 30 s).
    pub fn is_online(&self, hostname: &str) -> bool {
        let window = chrono::Duration::from_std(self.settings.interval * 3)
            .unwrap_or_default()
            .max(chrono::Duration::seconds(30));
        self.agents.is_connected(hostname) || self.hub.seen_at(hostname).is_some_and(|seen| Utc::now() - seen < window)
    }

    /// Fills in what only the running server knows: online, local, and the figures of
    /// the newest snapshot the hub knows of.
    pub fn decorate(&self, host: &mut HostSummary) {
        host.local = self.settings.local_hostname.as_deref() == Some(host.hostname.as_str());
        host.online = self.is_online(&host.hostname);
        host.figures = self.hub.glance_of(&host.hostname).map(|g| g.figures.clone());
        if host.info.as_ref().is_some_and(|i| i.os.is_empty()) {
            // Uploads in the short format carry no host facts.
            host.info = None;
        }
    }
}

/// The whole router.
pub fn app(state: AppState) -> Router {
    routes::router()
        // The dashboard for every other GET (JSON 404 stays for unknown /api/ and /ws/).
        .fallback(assets::fallback)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &axum::http::Request<_>| {
                    // The path only: query strings can hold tokens, which never reach logs.
                    // The client is the listener's (behind a trusted proxy, the one it
                    // forwarded).
                    let client = request.extensions().get::<listener::ClientIp>().map(|c| c.0.to_string());
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                        client = client.as_deref().unwrap_or("-")
                    )
                })
                // Not an error line per 5xx: a 500's cause is logged where it is answered
                // (`ApiError`), and a 503 is a refusal said once elsewhere (a full disk
                // once a minute), which a line per request would bury.
                .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        // gzip, brotli or zstd, as the client asks (a host's processes as JSON shrink
        // tenfold); tiny bodies, images and WebSocket upgrades are left alone.
        .layer(tower_http::compression::CompressionLayer::new())
        .layer(CatchPanicLayer::custom(|_| {
            use axum::response::IntoResponse;
            ApiError::Internal("a handler panicked".into()).into_response()
        }))
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::overriding(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        .with_state(state)
}

/// What `procyon serve` is told.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// Data directory (database, token signing key).
    pub data: PathBuf,
    /// Sample this machine too.
    pub local: bool,
    /// Timeouts and the connection cap.
    pub limits: Limits,
    /// Serve HTTPS with this certificate; plain HTTP without.
    pub tls: Option<TlsFiles>,
    /// Everything else.
    pub settings: Settings,
}

/// Opens the store: `database` when given (`--database`), else SQLite in `data`. The
/// data directory is made (owner-only) either way: it holds the collector's lock and the
/// first admin's password file.
pub async fn open_store(data: &std::path::Path, database: Option<&crate::store::Database>) -> anyhow::Result<Store> {
    std::fs::create_dir_all(data).with_context(|| format!("cannot create the data directory {}", data.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700));
    }
    match database {
        None => Store::open(&data.join("procyon.db"))
            .await
            .with_context(|| format!("cannot open the database in {}", data.display())),
        // Its URL as told, its password left out.
        Some(db) => Store::connect(db, crate::store::ReadLimits::default())
            .await
            .with_context(|| format!("cannot open the database {db}")),
    }
}

/// Makes a first admin account when there are no users, and says how to sign in.
pub async fn ensure_admin(store: &Store) -> anyhow::Result<Option<String>> {
    if store.user_count().await? > 0 {
        return Ok(None);
    }
    let password = auth::random_token(18).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let hash = auth::hash_password(&password).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    store.create_user("admin", &hash, Role::Admin).await?;
    Ok(Some(password))
}

/// The collector without its listener: the store, the hub, sign-in, and the background
/// tasks (sampling this machine when asked, rollups and retention). `serve` puts an HTTP
/// listener in front of it; the desktop app puts its window in front of it, and a
/// listener too when its built-in collector is on.
pub struct Collector {
    /// What handlers and commands share.
    pub state: AppState,
    tasks: tokio::task::JoinSet<()>,
    /// Held while the collector runs: one collector per data directory.
    #[cfg(unix)]
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// Takes the data directory's collector lock, or says who holds it. Two collectors on
/// one database would each think they own its hosts' sequence numbers and drop each
/// other's snapshots as duplicates. (The CLI's `user`, `apikey` and `host` commands do
/// not take it: they are meant to run beside a collector.)
#[cfg(unix)]
fn lock_data_dir(data: &std::path::Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    use nix::fcntl::{Flock, FlockArg};
    use std::io::{Read, Seek, Write};
    let path = data.join("collector.lock");
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            // The pid, for the next one to name.
            let _ = lock.set_len(0);
            let _ = lock.rewind();
            let _ = write!(lock, "{}", std::process::id());
            Ok(lock)
        }
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            anyhow::bail!(
                "Another Procyon collector{} already uses the data directory {}: two on one database would drop each \
                 other's snapshots. Stop it, or give this one its own --data DIR.",
                if holder.is_empty() { String::new() } else { format!(" (pid {holder})") },
                data.display()
            )
        }
        Err((_, errno)) => anyhow::bail!("cannot lock {}: {errno}", path.display()),
    }
}

impl Collector {
    /// Opens the store in `data` and starts the background tasks. With `local`, this
    /// machine is sampled every `settings.interval`, except while `paused` is set.
    pub async fn start(
        data: &std::path::Path,
        local: bool,
        settings: Settings,
        paused: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<Collector> {
        let store = open_store(data, settings.database.as_ref()).await?;
        #[cfg(unix)]
        let lock = match lock_data_dir(data) {
            Ok(lock) => lock,
            Err(e) => {
                store.close().await;
                return Err(e);
            }
        };
        // Kept in the database when it can keep one, so that every collector on it signs
        // alike; else in the data directory.
        let candidate = auth::random_bytes::<32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let auth = match store.shared_signing_key(&candidate).await {
            Ok(Some(key)) => auth::Auth::new(&key, settings.token_ttl),
            Ok(None) => match auth::Auth::from_data_dir(data, settings.token_ttl) {
                Ok(auth) => auth,
                Err(e) => {
                    store.close().await;
                    return Err(e);
                }
            },
            Err(e) => {
                store.close().await;
                return Err(e).context("cannot read the token signing key from the database");
            }
        };
        let mut settings = settings;
        let mut sampler = local.then(|| Sampler::new(SamplerOptions { hostname: None, cmdline: settings.cmdline }));
        if let Some(s) = &mut sampler {
            let hostname = s.host().hostname.clone();
            // Continue the sequence after a restart: (host, seq) is what makes a stored
            // snapshot unique.
            s.set_seq(store.next_seq(&hostname).await?.saturating_sub(1));
            settings.local_hostname = Some(hostname);
        }
        let state = AppState::new(store.clone(), Hub::new(), auth, settings.clone());
        if let Err(e) = state.alerts.load(settings.alerts_file.as_deref()).await {
            store.close().await;
            return Err(anyhow::anyhow!("cannot load the alert rules of --alerts: {e}"));
        }

        let mut tasks = tokio::task::JoinSet::new();
        // Alerts: every published snapshot evaluated, and a tick for hosts gone silent.
        tasks.spawn(Arc::clone(&state.alerts).run(state.hub.clone(), state.shutdown_signal()));
        if let Some(sampler) = sampler {
            let mut live = crate::sample::spawn_pausable(sampler, settings.interval, paused);
            let state = state.clone();
            tasks.spawn(async move {
                while live.changed().await.is_ok() {
                    let Some(snapshot) = live.borrow_and_update().clone() else { continue };
                    match state.ingest((*snapshot).clone()).await {
                        // The store logs a full disk once a minute.
                        Ok(_) | Err(ApiError::StorageFull { .. }) => {}
                        Err(e) => tracing::warn!("cannot store the local snapshot: {e:?}"),
                    }
                }
            });
        }
        // Rollups and retention, once for the fleet of collectors on the database.
        tasks.spawn(fleet::maintain(store, state.hub.clone(), settings.retention, Arc::clone(&state.alerts)));
        // The other collectors' snapshots and relayed actions (PostgreSQL).
        tasks.spawn(fleet::listen(state.clone()));
        Ok(Collector {
            state,
            tasks,
            #[cfg(unix)]
            _lock: lock,
        })
    }

    /// Stops the background tasks, then closes the store, so nothing accepted is lost.
    pub async fn stop(mut self) {
        self.state.begin_shutdown();
        self.tasks.shutdown().await;
        self.state.store.close().await;
    }
}

/// Serves `state` over plain HTTP on `listener` with the default [`Limits`] until `stop`
/// completes, then lets open requests finish (WebSockets are told to close).
pub async fn listen(
    state: AppState,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    listen_with(state, listener, Limits::default(), None, stop).await
}

/// [`listen`] with its limits, and over TLS when given a certificate.
pub async fn listen_with(
    state: AppState,
    listener: tokio::net::TcpListener,
    limits: Limits,
    tls: Option<Tls>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let stopping = state.clone();
    listener::run(app(state), listener, limits, tls, async move {
        stop.await;
        stopping.begin_shutdown();
    })
    .await
    .context("server error")
}

/// Where the first admin's password is kept until someone reads it and deletes the file.
pub fn first_password_file(data: &std::path::Path) -> PathBuf {
    data.join("initial-admin-password")
}

/// Makes the first admin (when there are no users) and tells the operator where its
/// password is. The password goes to a file only its owner can read, never to the
/// terminal or the log: both end up in the journal. Until the file is deleted, every
/// start says where it is, so a password is never lost to a failed first start.
pub async fn announce_first_admin(store: &Store, data: &std::path::Path) -> anyhow::Result<()> {
    let file = first_password_file(data);
    if let Some(password) = ensure_admin(store).await? {
        auth::write_private(&file, format!("{password}\n").as_bytes())
            .with_context(|| format!("cannot write the first admin password to {}", file.display()))?;
        println!(
            "No users yet: created `admin`; its password is in {} (readable by you only).\n\
             Sign in with it, change it (procyon user passwd admin --data {}), then delete that file.",
            file.display(),
            data.display()
        );
    } else if file.exists() {
        println!(
            "The first admin password is still in {}: once you have signed in and changed it, delete that file.",
            file.display()
        );
    }
    Ok(())
}

/// Runs the collector until SIGINT or SIGTERM.
pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    if options.settings.token_ttl > auth::MAX_TOKEN_TTL || options.settings.token_ttl.is_zero() {
        anyhow::bail!(
            "--token-ttl must be between 1 second and {} hours; a stolen token is worth at most that long.",
            auth::MAX_TOKEN_TTL.as_secs() / 3600
        );
    }
    // Before anything is opened: a bad certificate changes nothing.
    let tls = options.tls.as_ref().map(Tls::load).transpose()?;
    listener::raise_fd_limit(options.limits.max_connections);
    // Listen next: a start that fails (the port is taken) must not make the first admin
    // and lose its password with it.
    let listener = tokio::net::TcpListener::bind(options.bind)
        .await
        .with_context(|| format!("cannot listen on {}", options.bind))?;
    let never_paused = tokio::sync::watch::channel(false).1;
    let collector = Collector::start(&options.data, options.local, options.settings.clone(), never_paused).await?;
    announce_first_admin(&collector.state.store, &options.data).await?;
    let local = listener.local_addr()?;
    // No alert channel may post back to the collector.
    collector.state.alerts.set_own_addresses(vec![local]);
    let scheme = if tls.is_some() { "https" } else { "http" };
    // The database's URL without its password.
    let database = options.settings.database.as_ref().map_or_else(|| "SQLite".to_owned(), |db| db.to_string());
    tracing::info!(address = %local, tls = tls.is_some(), data = %options.data.display(), %database, "collector listening");
    match &options.settings.database {
        None => println!("Procyon collector on {scheme}://{local}/ (data in {})", options.data.display()),
        Some(db) => {
            println!("Procyon collector on {scheme}://{local}/ (database {db}, data in {})", options.data.display())
        }
    }
    listen_with(collector.state.clone(), listener, options.limits, tls, shutdown_signal()).await?;
    collector.stop().await;
    tracing::info!("collector stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
