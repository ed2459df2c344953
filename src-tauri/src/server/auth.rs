//! Who is asking: users with passwords and tokens, agents with API keys.
//!
//! - Passwords are stored as argon2id hashes (PHC strings).
//! - A successful sign-in returns a JWT (HS256) that expires after a short time; the
//!   signing key is random, made at first start and kept in the data directory (mode
//!   0600), so tokens survive a restart but not a new data directory.
//! - Repeated failed sign-ins for one name are slowed down, then refused for a while.
//! - API keys are 32 random bytes; only their SHA-256 is stored (keys are random, so a
//!   fast hash is enough, and uploads stay cheap to check).
//!
//! The extractors [`CurrentUser`] and [`AgentKey`] make handlers state what they need in
//! their signature. Tokens come from `Authorization: Bearer ...`; on WebSocket routes also
//! from `?token=` (browsers cannot set headers on a WebSocket).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine;
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiError;
use crate::model::api::{ApiKeySummary, LoginResponse, Role};

/// Failed sign-ins allowed before a name is locked for a while.
const FREE_FAILURES: u32 = 5;
/// Longest lock after repeated failures.
const MAX_LOCK: Duration = Duration::from_secs(300);
/// Delay added to every failed sign-in, to slow guessing down.
const FAILURE_DELAY: Duration = Duration::from_millis(300);

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
    /// Role at sign-in.
    pub role: Role,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Expires at (seconds since the epoch).
    pub exp: i64,
}

/// Token signing and the failed-login ledger.
pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl: Duration,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl Auth {
    /// Signs with `secret`; tokens live for `ttl`.
    pub fn new(secret: &[u8], ttl: Duration) -> Auth {
        Auth {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl,
            failures: Mutex::default(),
        }
    }

    /// Signs with the key kept in `dir` (made on first use, readable by the owner only).
    pub fn from_data_dir(dir: &Path, ttl: Duration) -> anyhow::Result<Auth> {
        use anyhow::Context;
        let path = dir.join("token-signing.key");
        let secret = match std::fs::read(&path) {
            Ok(secret) if secret.len() >= 32 => secret,
            _ => {
                let secret = random_bytes::<32>().map_err(|e| anyhow::anyhow!("{e:?}"))?.to_vec();
                write_private(&path, &secret).with_context(|| format!("cannot write {}", path.display()))?;
                secret
            }
        };
        Ok(Auth::new(&secret, ttl))
    }

    /// A token for `username`.
    pub fn issue(&self, username: &str, role: Role) -> Result<LoginResponse, ApiError> {
        let now = Utc::now();
        let expires_at = now + self.ttl;
        let claims = Claims { sub: username.to_owned(), role, iat: now.timestamp(), exp: expires_at.timestamp() };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::Internal(format!("signing a token: {e}")))?;
        Ok(LoginResponse { token, expires_at, role, username: username.to_owned() })
    }

    /// The claims of a valid, unexpired token.
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

    /// Refuses with 429 while `name` is locked after repeated failures.
    pub fn check_not_locked(&self, name: &str) -> Result<(), ApiError> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((count, last)) = failures.get(&name.to_lowercase())
            && *count >= FREE_FAILURES
        {
            let lock = lock_for(*count);
            let elapsed = last.elapsed();
            if elapsed < lock {
                return Err(ApiError::TooManyRequests((lock - elapsed).as_secs().max(1)));
            }
        }
        Ok(())
    }

    /// Counts a failed sign-in for `name` and waits a little.
    pub async fn record_failure(&self, name: &str) {
        {
            let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            if failures.len() > 10_000 {
                // Bounded: forget names that have cooled down.
                failures.retain(|_, (_, last)| last.elapsed() < MAX_LOCK);
            }
            let entry = failures.entry(name.to_lowercase()).or_insert((0, Instant::now()));
            entry.0 += 1;
            entry.1 = Instant::now();
        }
        tokio::time::sleep(FAILURE_DELAY).await;
    }

    /// Forgets the failures of `name` after a successful sign-in.
    pub fn record_success(&self, name: &str) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(&name.to_lowercase());
    }
}

fn lock_for(count: u32) -> Duration {
    let doublings = count.saturating_sub(FREE_FAILURES).min(16);
    Duration::from_secs(5u64 << doublings).min(MAX_LOCK)
}

/// Writes a file that only its owner may read.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}

/// A signed-in user, from a valid token.
#[derive(Debug, Clone, PartialEq)]
pub struct CurrentUser {
    /// User name.
    pub username: String,
    /// Role.
    pub role: Role,
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

/// The `token` query parameter, accepted on WebSocket routes only.
fn query_token(parts: &Parts) -> Option<String> {
    if !parts.uri.path().starts_with("/ws/") {
        return None;
    }
    parts.uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == "token").then(|| percent_decode(v))
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
        let token = match header_value(parts, "Bearer") {
            Some(t) => t.to_owned(),
            None => match query_token(parts) {
                Some(t) => t,
                None if header_value(parts, "Api-Key").is_some() => {
                    return Err(ApiError::Forbidden(
                        "API keys may only upload snapshots; sign in as a user to read.".into(),
                    ));
                }
                None => {
                    return Err(ApiError::Unauthorized(
                        "Sign in first: send `Authorization: Bearer <token>` from POST /api/auth/login.".into(),
                    ));
                }
            },
        };
        let claims = state.auth.verify(&token)?;
        Ok(CurrentUser { username: claims.sub, role: claims.role, expires_at: claims.exp })
    }
}

/// An agent, from a valid, unrevoked API key.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentKey {
    /// The key's stored facts.
    pub key: ApiKeySummary,
}

impl AgentKey {
    /// Refuses if the key is bound to another host name.
    pub fn check_host(&self, hostname: &str) -> Result<(), ApiError> {
        match &self.key.hostname {
            Some(bound) if bound != hostname => Err(ApiError::Forbidden(format!(
                "This API key is bound to host `{bound}` and may not upload for `{hostname}`."
            ))),
            _ => Ok(()),
        }
    }
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
        let record = state.store.api_key_by_hash(&hash_api_key(key)).await?;
        match record {
            Some(r) if r.summary.revoked_at.is_none() => {
                state.touch_key(&r.summary);
                Ok(AgentKey { key: r.summary })
            }
            Some(_) => Err(ApiError::Unauthorized("This API key has been revoked.".into())),
            None => Err(ApiError::Unauthorized("Unknown API key.".into())),
        }
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
        let login = auth.issue("ada", Role::Operator).unwrap();
        let claims = auth.verify(&login.token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.role), ("ada", Role::Operator));
        let other = Auth::new(b"another secret, another signature", Duration::from_secs(60));
        assert!(other.verify(&login.token).is_err());
        let expired = Auth::new(b"0123456789abcdef0123456789abcdef", Duration::ZERO);
        let old = expired.issue("ada", Role::Viewer).unwrap();
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

    #[tokio::test]
    async fn repeated_failures_lock_a_name() {
        let auth = Auth::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60));
        for _ in 0..FREE_FAILURES {
            assert!(auth.check_not_locked("Ada").is_ok());
            auth.record_failure("ada").await;
        }
        assert!(matches!(auth.check_not_locked("ADA"), Err(ApiError::TooManyRequests(_))));
        auth.record_success("ada");
        assert!(auth.check_not_locked("ada").is_ok());
    }

    #[test]
    fn query_tokens_are_decoded() {
        assert_eq!(percent_decode("a%2Eb%2e_c"), "a.b._c");
        assert_eq!(percent_decode("bad%zz%"), "bad%zz%");
    }
}
