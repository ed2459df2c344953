//! Who is asking: users with passwords and tokens, agents with API keys.
//!
//! - Passwords are stored as argon2id hashes (PHC strings). Hashing is slow on purpose,
//!   so it runs on blocking threads, a few at a time, never on the async workers.
//! - A successful sign-in returns a JWT (HS256) that expires after a short time (at most
//!   [`MAX_TOKEN_TTL`]); the signing key is random, made at first start and kept in the
//!   data directory (mode 0600), so tokens survive a restart but not a new data directory.
//! - A token names its user and the user's *generation*. Every request checks both
//!   against the database (through a cache of a few seconds): a removed user's tokens
//!   stop at once, and a password or role change gives the user a new generation, which
//!   ends every earlier token and the streams opened with them. The role is always the
//!   database's, never the token's.
//! - Failed sign-ins are counted per client address (throttled after many) and per
//!   (name, address) (locked for a while after a few), so that nobody can lock an admin
//!   out from elsewhere; the ledger is capped.
//! - Browsers open WebSockets with a *ticket*: a random, single-use string that stands
//!   for the caller's token for 30 seconds, so no token sits in a URL a proxy logs.
//!   `?token=` stays accepted for the original monitoring API's clients.
//! - API keys are 32 random bytes; only their SHA-256 is stored (keys are random, so a
//!   fast hash is enough, and uploads stay cheap to check).
//!
//! The extractors [`CurrentUser`] and [`AgentKey`] make handlers state what they need in
//! their signature. Tokens come from `Authorization: Bearer ...`; on WebSocket routes also
//! from `?ticket=` or `?token=` (browsers cannot set headers on a WebSocket).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use base64::Engine;
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiError;
use crate::model::api::{ApiKeySummary, KeyScope, LoginResponse, Role};
use crate::store::Store;

/// The longest a token may live: a stolen token is worth a day at most.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// The longest a session may be kept alive by renewing its token without signing in
/// again: a working day.
pub const MAX_SESSION_AGE: Duration = Duration::from_secs(12 * 3600);
/// Longest user name accepted at sign-in; longer ones are refused before any work.
pub const MAX_USERNAME_BYTES: usize = 64;
/// Failed sign-ins allowed for one (name, address) before it is locked for a while.
const FREE_FAILURES: u32 = 5;
/// Failed sign-ins allowed from one address, whatever the names, before it is throttled.
const FREE_ADDRESS_FAILURES: u32 = 30;
/// Longest lock after repeated failures; failures older than this are forgotten.
const MAX_LOCK: Duration = Duration::from_secs(300);
/// Delay added to every failed sign-in, to slow guessing down.
const FAILURE_DELAY: Duration = Duration::from_millis(300);
/// Most entries the failure ledger keeps in each of its tables.
const LEDGER_MAX: usize = 10_000;
/// Password hashes computed at once (each takes about 19 MiB and tens of milliseconds).
const HASHING_AT_ONCE: usize = 2;
/// Longest wait for a turn at hashing.
const HASHING_WAIT: Duration = Duration::from_secs(5);
/// Most WebSocket tickets one user may hold at once.
const TICKETS_PER_USER: usize = 16;
/// How long a user's generation and role are trusted without asking the database.
const USER_CACHE_TTL: Duration = Duration::from_secs(5);
/// Most users in that cache.
const USER_CACHE_MAX: usize = 4096;
/// How long a WebSocket ticket is valid.
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// Most tickets outstanding at once.
const TICKETS_MAX: usize = 10_000;

/// Random bytes from the OS.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], ApiError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| ApiError::Internal(format!("no randomness from the OS: {e}")))?;
    Ok(buf)
}

/// A random string of URL-safe characters carrying `bytes` of randomness.
pub fn random_token(bytes: usize) -> Result<String, ApiError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| ApiError::Internal(format!("no randomness from the OS: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

/// The argon2id hash of `password`.
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()?).map_err(|e| ApiError::Internal(format!("salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::Internal(format!("hashing a password: {e}")))
}

/// Whether `password` matches `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// A new API key: `(key, prefix, hash)`. Show `key` once; store `prefix` and `hash`.
pub fn new_api_key() -> Result<(String, String, String), ApiError> {
    let key = format!("pk_{}", random_token(32)?);
    let prefix = key.chars().take(10).collect();
    let hash = hash_api_key(&key);
    Ok((key, prefix, hash))
}

/// The stored form of an API key.
pub fn hash_api_key(key: &str) -> String {
    Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Claims in a token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// User name.
    pub sub: String,
    /// Role at sign-in (shown to clients; requests use the database's).
    pub role: Role,
    /// The user's token generation at sign-in.
    #[serde(rename = "gen")]
    pub generation: i64,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Expires at (seconds since the epoch).
    pub exp: i64,
    /// When the user signed in with their password (seconds since the epoch): renewing a
    /// token keeps it, so a session cannot be renewed past [`MAX_SESSION_AGE`]. 0 in
    /// tokens from before renewal existed (their `iat` counts).
    #[serde(default)]
    pub auth_time: i64,
}

/// Failed sign-ins of one key of the ledger.
#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Failures {
    /// Whether these failures are old enough to forget.
    fn cooled(&self) -> bool {
        self.last.elapsed() >= MAX_LOCK
    }

    /// How much longer the key is locked, if it is.
    fn locked_for(&self, free: u32) -> Option<Duration> {
        if self.cooled() || self.count < free {
            return None;
        }
        let doublings = (self.count - free).min(16);
        let lock = Duration::from_secs(5u64 << doublings).min(MAX_LOCK);
        lock.checked_sub(self.last.elapsed()).filter(|d| !d.is_zero())
    }
}

/// A table of the ledger, bounded: when full, cooled entries go, then the oldest half.
struct Table<K> {
    entries: HashMap<K, Failures>,
}

impl<K: std::hash::Hash + Eq + Clone> Table<K> {
    fn new() -> Self {
        Table { entries: HashMap::new() }
    }

    fn get(&self, key: &K) -> Option<Failures> {
        self.entries.get(key).copied()
    }

    fn bump(&mut self, key: K) -> u32 {
        if self.entries.len() >= LEDGER_MAX && !self.entries.contains_key(&key) {
            self.entries.retain(|_, f| !f.cooled());
            if self.entries.len() >= LEDGER_MAX {
                let mut times: Vec<Instant> = self.entries.values().map(|f| f.last).collect();
                times.sort_unstable();
                let cut = times[times.len() / 2];
                self.entries.retain(|_, f| f.last > cut);
            }
        }
        let entry = self.entries.entry(key).or_insert(Failures { count: 0, last: Instant::now() });
        if entry.cooled() {
            entry.count = 0;
        }
        entry.count += 1;
        entry.last = Instant::now();
        entry.count
    }

    fn remove(&mut self, key: &K) {
        self.entries.remove(key);
    }

    fn unbump(&mut self, key: &K) {
        if let Some(f) = self.entries.get_mut(key) {
            f.count = f.count.saturating_sub(1);
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Where a sign-in comes from: the peer address when the listener knows it.
pub type ClientAddress = Option<IpAddr>;

/// Failed sign-ins, by address and by (name, address).
struct Ledger {
    by_address: Table<ClientAddress>,
    by_name: Table<(String, ClientAddress)>,
}

/// What the cache knows of a user.
#[derive(Clone, Copy)]
struct CachedUser {
    generation: i64,
    role: Role,
    fetched: Instant,
}

/// A WebSocket ticket's promise.
#[derive(Clone)]
struct Ticket {
    username: String,
    generation: i64,
    expires_at: i64,
    valid_until: Instant,
}

/// Token signing, user checks and the failed-login ledger.
pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl: Duration,
    ledger: Mutex<Ledger>,
    hashing: tokio::sync::Semaphore,
    users: Mutex<HashMap<String, CachedUser>>,
    tickets: Mutex<HashMap<String, Ticket>>,
    /// Bumped whenever a user's access may have ended, so that open streams check.
    changes: tokio::sync::watch::Sender<u64>,
    failed_sign_ins: AtomicU64,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl Auth {
    /// Signs with `secret`; tokens live for `ttl` (at most [`MAX_TOKEN_TTL`]).
    pub fn new(secret: &[u8], ttl: Duration) -> Auth {
        Auth {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl: ttl.min(MAX_TOKEN_TTL),
            ledger: Mutex::new(Ledger { by_address: Table::new(), by_name: Table::new() }),
            hashing: tokio::sync::Semaphore::new(HASHING_AT_ONCE),
            users: Mutex::default(),
            tickets: Mutex::default(),
            changes: tokio::sync::watch::channel(0).0,
            failed_sign_ins: AtomicU64::new(0),
        }
    }

    /// Signs with the key kept in `dir` (made on first use, readable by the owner only;
    /// its mode is put right at every start, in case someone loosened it).
    pub fn from_data_dir(dir: &Path, ttl: Duration) -> anyhow::Result<Auth> {
        use anyhow::Context;
        let path = dir.join("token-signing.key");
        let secret = match std::fs::read(&path) {
            Ok(secret) if secret.len() >= 32 => {
                restrict_to_owner(&path).with_context(|| format!("cannot restrict {} to its owner", path.display()))?;
                secret
            }
            _ => {
                let secret = random_bytes::<32>().map_err(|e| anyhow::anyhow!("{e:?}"))?.to_vec();
                write_private(&path, &secret).with_context(|| format!("cannot write {}", path.display()))?;
                secret
            }
        };
        Ok(Auth::new(&secret, ttl))
    }

    /// A token for `username` under its current `generation`, for a sign-in now.
    pub fn issue(&self, username: &str, role: Role, generation: i64) -> Result<LoginResponse, ApiError> {
        self.issue_for_session(username, role, generation, Utc::now().timestamp())
    }

    /// A new token for the session `token` belongs to (the dashboard renews before its
    /// token expires, while someone uses it), for `user` as checked now. Refused once the
    /// session is [`MAX_SESSION_AGE`] old: then the password is asked again.
    pub fn renew(&self, token: &str, user: &CurrentUser) -> Result<LoginResponse, ApiError> {
        let claims = self.verify(token)?;
        let signed_in = if claims.auth_time > 0 { claims.auth_time } else { claims.iat };
        let age = Utc::now().timestamp() - signed_in;
        if age >= MAX_SESSION_AGE.as_secs() as i64 {
            return Err(ApiError::Unauthorized(format!(
                "This session is {} hours old, the most a sign-in lasts; sign in again.",
                MAX_SESSION_AGE.as_secs() / 3600
            )));
        }
        self.issue_for_session(&user.username, user.role, user.generation, signed_in)
    }

    fn issue_for_session(
        &self,
        username: &str,
        role: Role,
        generation: i64,
        auth_time: i64,
    ) -> Result<LoginResponse, ApiError> {
        let now = Utc::now();
        let session_end = chrono::DateTime::from_timestamp(auth_time, 0).unwrap_or(now)
            + chrono::Duration::from_std(MAX_SESSION_AGE).unwrap_or_default();
        let expires_at = (now + self.ttl).min(session_end);
        let claims = Claims {
            sub: username.to_owned(),
            role,
            generation,
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
            auth_time,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::Internal(format!("signing a token: {e}")))?;
        Ok(LoginResponse { token, expires_at, role, username: username.to_owned() })
    }

    /// The claims of a valid, unexpired token (the account is not checked here).
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map(|data| data.claims).map_err(|e| match e
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                ApiError::Unauthorized("Your session has expired; sign in again.".into())
            }
            _ => ApiError::Unauthorized("The token is not valid; sign in again.".into()),
        })
    }

    /// The signed-in user a token's `username` and `generation` stand for, with the role
    /// the database gives them now; refused when the account is gone or changed.
    pub async fn user(
        &self,
        store: &Store,
        username: &str,
        generation: i64,
        expires_at: i64,
    ) -> Result<CurrentUser, ApiError> {
        let cached = self.users.lock().unwrap_or_else(|p| p.into_inner()).get(username).copied();
        let known = match cached {
            Some(c) if c.fetched.elapsed() < USER_CACHE_TTL => Some(c),
            _ => {
                let fresh = store.user_by_name(username).await?.map(|u| CachedUser {
                    generation: u.token_generation,
                    role: u.summary.role,
                    fetched: Instant::now(),
                });
                let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
                if users.len() >= USER_CACHE_MAX {
                    users.clear();
                }
                match fresh {
                    Some(f) => users.insert(username.to_owned(), f),
                    None => users.remove(username),
                };
                fresh
            }
        };
        match known {
            None => Err(ApiError::Unauthorized(format!("The account `{username}` no longer exists; sign in again."))),
            Some(k) if k.generation != generation => Err(ApiError::Unauthorized(
                "Your password or role has changed since you signed in; sign in again.".into(),
            )),
            Some(k) => Ok(CurrentUser { username: username.to_owned(), role: k.role, generation, expires_at }),
        }
    }

    /// Whether `user` still has the access they signed in with (their account exists and
    /// neither its password nor its role changed). Streams ask this when told of a change
    /// and every few seconds.
    pub async fn still_valid(&self, store: &Store, user: &CurrentUser) -> bool {
        match self.user(store, &user.username, user.generation, user.expires_at).await {
            Ok(now) => now.role == user.role,
            // A database hiccup is not a reason to cut a dashboard off.
            Err(ApiError::Unauthorized(_)) => false,
            Err(_) => true,
        }
    }

    /// Forgets what the cache knows of `username` and tells open streams to check: call
    /// after removing a user or changing their password or role.
    pub fn user_changed(&self, username: &str) {
        self.users.lock().unwrap_or_else(|p| p.into_inner()).remove(username);
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes each time [`Auth::user_changed`] is called.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// A single-use WebSocket ticket standing for `user` for [`TICKET_TTL`].
    pub fn issue_ticket(&self, user: &CurrentUser) -> Result<String, ApiError> {
        let ticket = random_token(32)?;
        let mut tickets = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // One user cannot use up everyone's tickets: a few each, the oldest going first.
        let mut own: Vec<(Instant, String)> = tickets
            .iter()
            .filter(|(_, t)| t.username == user.username)
            .map(|(k, t)| (t.valid_until, k.clone()))
            .collect();
        if own.len() >= TICKETS_PER_USER {
            own.sort();
            for (_, k) in own.iter().take(own.len() + 1 - TICKETS_PER_USER) {
                tickets.remove(k);
            }
        }
        if tickets.len() >= TICKETS_MAX {
            tickets.retain(|_, t| t.valid_until > now);
        }
        if tickets.len() >= TICKETS_MAX {
            return Err(ApiError::TooManyRequests(TICKET_TTL.as_secs()));
        }
        tickets.insert(
            ticket.clone(),
            Ticket {
                username: user.username.clone(),
                generation: user.generation,
                expires_at: user.expires_at,
                valid_until: Instant::now() + TICKET_TTL,
            },
        );
        Ok(ticket)
    }

    /// Takes a ticket (it works once): the user, generation and token expiry it stands for.
    fn redeem_ticket(&self, ticket: &str) -> Result<(String, i64, i64), ApiError> {
        let taken = self.tickets.lock().unwrap_or_else(|p| p.into_inner()).remove(ticket);
        match taken {
            Some(t) if t.valid_until > Instant::now() => Ok((t.username, t.generation, t.expires_at)),
            _ => Err(ApiError::Unauthorized(
                "This WebSocket ticket is unknown, used or expired; ask POST /api/auth/ws-ticket for a new one.".into(),
            )),
        }
    }

    /// Checks a password against `hash` (or against a dummy when the user does not exist,
    /// so that timing does not tell which names exist) on a blocking thread, a few at a
    /// time.
    pub async fn check_password(&self, password: String, hash: Option<String>) -> Result<bool, ApiError> {
        const DUMMY: &str =
            "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2TqOIcSy6u4tvdOoFjIe1xgMAp2QTVbnImhdrGEJdGE";
        let _permit = self.hashing_turn().await?;
        tokio::task::spawn_blocking(move || {
            let ok = verify_password(&password, hash.as_deref().unwrap_or(DUMMY));
            ok && hash.is_some()
        })
        .await
        .map_err(|e| ApiError::Internal(format!("password check: {e}")))
    }

    /// A turn at password hashing, waited for a few seconds at most: a flood of sign-ins
    /// gets 503 rather than a queue that keeps everyone waiting.
    async fn hashing_turn(&self) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
        match tokio::time::timeout(HASHING_WAIT, self.hashing.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(ApiError::Unavailable("The collector is stopping.".into())),
            Err(_) => Err(ApiError::Busy {
                retry_after_secs: HASHING_WAIT.as_secs(),
                message: format!(
                    "The collector is busy checking other passwords; try again in {} s.",
                    HASHING_WAIT.as_secs()
                ),
            }),
        }
    }

    /// Hashes a password on a blocking thread, a few at a time.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        let _permit = self.hashing_turn().await?;
        tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| ApiError::Internal(format!("password hashing: {e}")))?
    }

    /// Starts a sign-in attempt for `name` from `address`: refused with 429 while that
    /// name is locked for that address, or the address is throttled. The attempt counts
    /// as a failure from now on, until [`Auth::succeeded`] says otherwise, so that many
    /// attempts sent at once cannot all pass the lock before the first is judged.
    pub fn attempt(&self, name: &str, address: ClientAddress) -> Result<(), ApiError> {
        let mut ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        let key = (name.to_lowercase(), address);
        let by_address = ledger.by_address.get(&address).and_then(|f| f.locked_for(FREE_ADDRESS_FAILURES));
        let by_name = ledger.by_name.get(&key).and_then(|f| f.locked_for(FREE_FAILURES));
        if let Some(wait) = by_address.max(by_name) {
            return Err(ApiError::TooManyRequests(wait.as_secs().max(1)));
        }
        ledger.by_name.bump(key);
        ledger.by_address.bump(address);
        Ok(())
    }

    /// A failed sign-in (already counted by [`Auth::attempt`]): logged, never with the
    /// password, then a little wait.
    pub async fn failed(&self, name: &str, address: ClientAddress) {
        let (for_name, for_address) = {
            let ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
            let count = |f: Option<Failures>| f.map_or(0, |f| f.count);
            (count(ledger.by_name.get(&(name.to_lowercase(), address))), count(ledger.by_address.get(&address)))
        };
        let total = self.failed_sign_ins.fetch_add(1, Ordering::Relaxed) + 1;
        let shown: String = name.chars().take(MAX_USERNAME_BYTES).collect();
        let from = address.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        tracing::warn!(user = ?shown, address = %from, failures = for_name, from_address = for_address, total, "sign-in failed");
        tokio::time::sleep(FAILURE_DELAY).await;
    }

    /// A successful sign-in: the name's failures from that address are forgotten, and
    /// the attempt no longer counts against the address.
    pub fn succeeded(&self, name: &str, address: ClientAddress) {
        let mut ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        ledger.by_name.remove(&(name.to_lowercase(), address));
        ledger.by_address.unbump(&address);
    }

    /// Failed sign-ins since start.
    pub fn failed_sign_ins(&self) -> u64 {
        self.failed_sign_ins.load(Ordering::Relaxed)
    }

    /// Entries in the failure ledger (both tables), to show that it stays bounded.
    pub fn ledger_len(&self) -> usize {
        let ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        ledger.by_address.len() + ledger.by_name.len()
    }
}

/// Writes a file that only its owner may read, atomically: a reader (or a crash) sees
/// the old content or the new, never half of it.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = (|| {
        let mut file = options.open(&temp)?;
        // The mode given at creation is filtered by the umask; set it outright.
        restrict_to_owner(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// Makes a file readable and writable by its owner only.
pub fn restrict_to_owner(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// The peer address of a request, when the listener recorded it.
pub fn client_address(parts: &Parts) -> ClientAddress {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| throttling_key(c.0.ip()))
}

/// The address sign-ins are counted under: the listener's [`super::listener::client_key`]
/// (an IPv6 client holds a whole /64, so it is counted as one).
fn throttling_key(ip: IpAddr) -> IpAddr {
    super::listener::client_key(ip)
}

/// The signed-in person of a request the desktop app makes in-process. Requests from the
/// network cannot carry it (extensions are never read off the wire), so this is how the
/// app's own window is trusted without a token or an account in the store.
#[derive(Debug, Clone)]
pub struct InProcessUser(pub CurrentUser);

/// A signed-in user, from a valid token.
#[derive(Debug, Clone, PartialEq)]
pub struct CurrentUser {
    /// User name.
    pub username: String,
    /// Role, as the database has it now.
    pub role: Role,
    /// The account's token generation the credentials were issued under.
    pub generation: i64,
    /// When the token expires (seconds since the epoch).
    pub expires_at: i64,
}

impl CurrentUser {
    /// Refuses unless the user may act on processes.
    pub fn require_operator(&self) -> Result<(), ApiError> {
        if self.role.may_act() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "`{}` is a {}; acting on processes needs the operator or admin role.",
                self.username,
                self.role.as_str()
            )))
        }
    }

    /// Refuses unless the user is an admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.role == Role::Admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden("Only admins may manage users and API keys.".into()))
        }
    }
}

fn header_value<'a>(parts: &'a Parts, scheme: &str) -> Option<&'a str> {
    let value = parts.headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (given, rest) = value.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

/// A query parameter of a WebSocket route (credentials in URLs are accepted there only).
fn ws_query_param(parts: &Parts, name: &str) -> Option<String> {
    if !parts.uri.path().starts_with("/ws/") {
        return None;
    }
    parts.uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(InProcessUser(user)) = parts.extensions.get::<InProcessUser>() {
            return Ok(user.clone());
        }
        let (username, generation, expires_at) = if let Some(token) = header_value(parts, "Bearer") {
            let claims = state.auth.verify(token)?;
            (claims.sub, claims.generation, claims.exp)
        } else if let Some(ticket) = ws_query_param(parts, "ticket") {
            state.auth.redeem_ticket(&ticket)?
        } else if let Some(token) = ws_query_param(parts, "token") {
            let claims = state.auth.verify(&token)?;
            (claims.sub, claims.generation, claims.exp)
        } else if header_value(parts, "Api-Key").is_some() {
            return Err(ApiError::Forbidden(
                "API keys may only upload snapshots or read /metrics; sign in as a user to read the API.".into(),
            ));
        } else {
            return Err(ApiError::Unauthorized(
                "Sign in first: send `Authorization: Bearer <token>` from POST /api/auth/login.".into(),
            ));
        };
        state.auth.user(&state.store, &username, generation, expires_at).await
    }
}

/// A signed-in admin. As an extractor it refuses everyone else (403) before the request's
/// body is read, so that a non-admin learns nothing from the body's checks.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminUser(pub CurrentUser);

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let user = CurrentUser::from_request_parts(parts, state).await?;
        user.require_admin()?;
        Ok(AdminUser(user))
    }
}

/// What to do about a key the collector refuses.
const KEY_FIX: &str = " Sign the agent in again (`procyon-agent login --collector URL --user ADMIN --replace`) or give it a key made with `procyon apikey create` on this collector.";

/// An agent, from a valid, unrevoked API key.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentKey {
    /// The key's stored facts.
    pub key: ApiKeySummary,
}

impl FromRequestParts<AppState> for AgentKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(key) = header_value(parts, "Api-Key") else {
            return Err(ApiError::Unauthorized(
                "Uploads need an agent API key: `Authorization: Api-Key <key>` (make one with `procyon apikey create`)."
                    .into(),
            ));
        };
        let key = live_key(state, key, KEY_FIX).await?;
        if key.scope != KeyScope::Upload {
            return Err(ApiError::Forbidden(format!(
                "The API key `{}` may only read /metrics; agents need a key made with `procyon apikey create` \
                 (scope upload).",
                key.name
            )));
        }
        state.touch_key(&key);
        Ok(AgentKey { key })
    }
}

/// The stored facts of `key` if this collector made it and it is not revoked; `fix` is
/// appended to the refusal.
async fn live_key(state: &AppState, key: &str, fix: &str) -> Result<ApiKeySummary, ApiError> {
    match state.store.api_key_by_hash(&hash_api_key(key)).await? {
        Some(r) if r.summary.revoked_at.is_none() => Ok(r.summary),
        Some(_) => Err(ApiError::Unauthorized(format!("This API key has been revoked.{fix}"))),
        None => Err(ApiError::Unauthorized(format!(
            "Unknown API key: this collector never made it (another collector or data directory?).{fix}"
        ))),
    }
}

/// What to do about a scraper the collector refuses.
const METRICS_FIX: &str = " Make a key for scraping with `procyon apikey create --name prom --scope metrics`.";

/// Who may read `/metrics`: a key of scope `metrics`, sent as `Authorization: Bearer KEY`
/// (what Prometheus' `authorization` setting sends) or `Api-Key KEY`, or a signed-in
/// admin. Upload keys and other users are refused: the metrics name every host and its
/// busiest programs.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricsReader {
    /// A scraping key.
    Key(ApiKeySummary),
    /// An admin with a token.
    Admin(CurrentUser),
}

impl FromRequestParts<AppState> for MetricsReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // API keys start `pk_`; tokens are JWTs, which never do.
        let key = header_value(parts, "Api-Key")
            .or_else(|| header_value(parts, "Bearer").filter(|v| v.starts_with("pk_")))
            .map(str::to_owned);
        if let Some(key) = key {
            let key = live_key(state, &key, METRICS_FIX).await?;
            if key.scope != KeyScope::Metrics {
                return Err(ApiError::Forbidden(format!(
                    "The API key `{}` may only upload snapshots.{METRICS_FIX}",
                    key.name
                )));
            }
            state.touch_key(&key);
            return Ok(MetricsReader::Key(key));
        }
        if header_value(parts, "Bearer").is_none() && parts.extensions.get::<InProcessUser>().is_none() {
            return Err(ApiError::Unauthorized(format!(
                "Reading /metrics needs `Authorization: Bearer <key>` with a key of scope metrics.{METRICS_FIX}"
            )));
        }
        let user = CurrentUser::from_request_parts(parts, state).await?;
        if user.role != Role::Admin {
            return Err(ApiError::Forbidden(format!(
                "`{}` is a {}; only admins and keys of scope metrics may read /metrics.{METRICS_FIX}",
                user.username,
                user.role.as_str()
            )));
        }
        Ok(MetricsReader::Admin(user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_hash() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("Correct horse", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn tokens_round_trip_and_reject_tampering_and_expiry() {
        let auth = Auth::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60));
        let login = auth.issue("ada", Role::Operator, 7).unwrap();
        let claims = auth.verify(&login.token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.role, claims.generation), ("ada", Role::Operator, 7));
        let other = Auth::new(b"another secret, another signature", Duration::from_secs(60));
        assert!(other.verify(&login.token).is_err());
        let expired = Auth::new(b"0123456789abcdef0123456789abcdef", Duration::ZERO);
        let old = expired.issue("ada", Role::Viewer, 0).unwrap();
        std::thread::sleep(Duration::from_millis(10));
        // Within the 5 s leeway it still passes; past it, it fails.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        let claims = jsonwebtoken::decode::<Claims>(&old.token, &expired.decoding, &validation);
        assert!(claims.is_err() || claims.unwrap().claims.exp <= Utc::now().timestamp());
    }

    #[test]
    fn api_keys_are_random_and_hashed() {
        let (a, prefix, hash) = new_api_key().unwrap();
        let (b, _, _) = new_api_key().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(&prefix) && a.len() > 40);
        assert_eq!(hash, hash_api_key(&a));
        assert_eq!(hash.len(), 64);
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn addr(text: &str) -> ClientAddress {
        Some(text.parse().unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_failures_lock_a_name_from_that_address_only() {
        let auth = Auth::new(SECRET, Duration::from_secs(60));
        let (attacker, admin) = (addr("203.0.113.9"), addr("192.0.2.1"));
        for _ in 0..FREE_FAILURES {
            auth.attempt("ADMIN", attacker).unwrap();
            auth.failed("ADMIN", attacker).await;
        }
        // Case does not help the attacker around the lock ...
        assert!(matches!(auth.attempt("Admin", attacker), Err(ApiError::TooManyRequests(_))));
        // ... and the real admin, elsewhere, is not locked out.
        auth.attempt("admin", admin).unwrap();
        auth.succeeded("admin", admin);
        auth.succeeded("admin", attacker);
        assert!(auth.attempt("admin", attacker).is_ok());
        assert_eq!(auth.failed_sign_ins(), u64::from(FREE_FAILURES));
    }

    #[test]
    fn attempts_sent_at_once_count_before_any_is_judged() {
        let auth = Auth::new(SECRET, Duration::from_secs(60));
        let from = addr("203.0.113.9");
        let admitted = (0..50).filter(|_| auth.attempt("admin", from).is_ok()).count();
        assert_eq!(admitted, FREE_FAILURES as usize);
    }

    #[tokio::test(start_paused = true)]
    async fn an_address_trying_many_names_is_throttled() {
        let auth = Auth::new(SECRET, Duration::from_secs(60));
        let from = addr("203.0.113.9");
        for i in 0..FREE_ADDRESS_FAILURES {
            auth.attempt(&format!("user{i}"), from).unwrap();
            auth.failed(&format!("user{i}"), from).await;
        }
        assert!(matches!(auth.attempt("someone-new", from), Err(ApiError::TooManyRequests(_))));
        assert!(auth.attempt("someone-new", addr("192.0.2.1")).is_ok());
        // Every address of one IPv6 /64 counts as one client.
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(throttling_key(a), throttling_key(b));
        assert_ne!(throttling_key(a), throttling_key("2001:db8:1:3::1".parse().unwrap()));
    }

    #[test]
    fn one_user_cannot_hold_everyones_tickets() {
        let auth = Auth::new(SECRET, Duration::from_secs(60));
        let user =
            |name: &str| CurrentUser { username: name.into(), role: Role::Viewer, generation: 1, expires_at: 99 };
        let first = auth.issue_ticket(&user("greedy")).unwrap();
        for _ in 0..(TICKETS_PER_USER * 3) {
            auth.issue_ticket(&user("greedy")).unwrap();
        }
        assert!(auth.redeem_ticket(&first).is_err(), "the oldest went");
        let held = auth.tickets.lock().unwrap().values().filter(|t| t.username == "greedy").count();
        assert_eq!(held, TICKETS_PER_USER);
        assert!(auth.issue_ticket(&user("someone")).is_ok());
    }

    #[test]
    fn the_ledger_stays_bounded() {
        let mut table = Table::new();
        for i in 0..(3 * LEDGER_MAX) {
            table.bump((format!("name{i}"), None::<IpAddr>));
        }
        assert!(table.len() <= LEDGER_MAX, "{} entries", table.len());
        // The newest failures are the ones kept.
        assert!(table.get(&(format!("name{}", 3 * LEDGER_MAX - 1), None)).is_some());
    }

    #[test]
    fn a_session_is_renewed_up_to_its_maximum_age() {
        let auth = Auth::new(SECRET, Duration::from_secs(3600));
        let user = CurrentUser { username: "ada".into(), role: Role::Viewer, generation: 3, expires_at: 0 };
        let fresh = auth.issue("ada", Role::Viewer, 3).unwrap();
        let renewed = auth.renew(&fresh.token, &user).unwrap();
        let (a, b) = (auth.verify(&fresh.token).unwrap(), auth.verify(&renewed.token).unwrap());
        assert_eq!(b.auth_time, a.auth_time, "the sign-in time is kept");
        assert_eq!(b.generation, 3);
        // A session signed in 11.5 hours ago gets a token that ends at 12 hours ...
        let now = Utc::now().timestamp();
        let old = auth.issue_for_session("ada", Role::Viewer, 3, now - 11 * 3600 - 1800).unwrap();
        let renewed = auth.renew(&old.token, &user).unwrap();
        assert!(renewed.expires_at.timestamp() <= now - 11 * 3600 - 1800 + MAX_SESSION_AGE.as_secs() as i64);
        // ... and one past that is not renewed.
        let older = auth.issue_for_session("ada", Role::Viewer, 3, now - 13 * 3600).unwrap();
        assert!(matches!(auth.renew(&older.token, &user), Err(ApiError::Unauthorized(_))));
    }

    #[test]
    fn token_lifetimes_are_capped() {
        let auth = Auth::new(SECRET, Duration::from_secs(365 * 24 * 3600));
        let login = auth.issue("ada", Role::Viewer, 0).unwrap();
        assert!(login.expires_at <= Utc::now() + MAX_TOKEN_TTL);
    }

    #[test]
    fn tickets_work_once() {
        let auth = Auth::new(SECRET, Duration::from_secs(60));
        let user = CurrentUser { username: "ada".into(), role: Role::Viewer, generation: 3, expires_at: 99 };
        let ticket = auth.issue_ticket(&user).unwrap();
        assert_eq!(auth.redeem_ticket(&ticket).unwrap(), ("ada".to_owned(), 3, 99));
        assert!(auth.redeem_ticket(&ticket).is_err());
        assert!(auth.redeem_ticket("made-up").is_err());
    }

    #[test]
    fn private_files_are_replaced_whole_with_owner_only_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, b"old").unwrap();
        write_private(&path, b"new secret").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new secret");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_loosened_signing_key_is_restricted_again_at_start() {
        let dir = tempfile::tempdir().unwrap();
        Auth::from_data_dir(dir.path(), Duration::from_secs(60)).unwrap();
        let path = dir.path().join("token-signing.key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            Auth::from_data_dir(dir.path(), Duration::from_secs(60)).unwrap();
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn query_tokens_are_decoded() {
        assert_eq!(percent_decode("a%2Eb%2e_c"), "a.b._c");
        assert_eq!(percent_decode("bad%zz%"), "bad%zz%");
    }
}
