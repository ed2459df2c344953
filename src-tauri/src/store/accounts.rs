//! Users, agent API keys and the audit log of process actions.
//!
//! The store keeps what it is given: password hashes and key hashes are made (and
//! checked) by the server, never here.

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::db::{Db, on};
use super::{
    ApiKeyRecord, NewAuditEntry, Page, Result, Store, StoreError, UserRecord, from_ms, is_unique_violation, page_limit,
    to_ms, to_u32,
};
use crate::model::api::{ApiKeySummary, AuditAction, AuditEntry, KeyScope, Role, UserSummary};

/// Now, at the precision times are stored with, so that what a call returns equals what
/// a later read returns.
fn now_ms() -> i64 {
    to_ms(Utc::now())
}

#[derive(FromRow)]
struct UserRow {
    id: i64,
    username: String,
    password_hash: String,
    role: String,
    created_at: i64,
    token_generation: i64,
}

impl UserRow {
    fn record(self) -> Result<UserRecord> {
        let role =
            self.role.parse::<Role>().map_err(|e| StoreError::Corrupt(format!("user `{}`: {e}", self.username)))?;
        Ok(UserRecord {
            summary: UserSummary { id: self.id, username: self.username, role, created_at: from_ms(self.created_at) },
            password_hash: self.password_hash,
            token_generation: self.token_generation,
        })
    }
}

const USER_COLUMNS: &str = "id, username, password_hash, role, created_at, token_generation";

/// A condition on the `users` row at hand: it is not the only admin.
const NOT_LAST_ADMIN: &str = "(role != 'admin' OR (SELECT COUNT(*) FROM users WHERE role = 'admin') > 1)";

/// A new token generation for a user: random, so that no earlier token of anyone who
/// ever had this name matches it.
fn new_generation() -> i64 {
    // 63 random bits are plenty; a failing OS random source falls back to the clock,
    // which still differs from every earlier generation of this user.
    getrandom::u64().map(|v| (v >> 1) as i64).unwrap_or_else(|_| Utc::now().timestamp_nanos_opt().unwrap_or(1))
}

#[derive(FromRow)]
struct KeyRow {
    id: i64,
    name: String,
    prefix: String,
    scope: String,
    hostname: Option<String>,
    created_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl From<KeyRow> for ApiKeySummary {
    fn from(r: KeyRow) -> Self {
        ApiKeySummary {
            id: r.id,
            name: r.name,
            prefix: r.prefix,
            // The column allows the known scopes only (its CHECK); were another to appear,
            // the narrower one is assumed: it can read metrics, nothing more.
            scope: r.scope.parse().unwrap_or(KeyScope::Metrics),
            hostname: r.hostname,
            created_at: from_ms(r.created_at),
            last_used_at: r.last_used_at.map(from_ms),
            revoked_at: r.revoked_at.map(from_ms),
        }
    }
}

const KEY_COLUMNS: &str = "id, name, prefix, scope, hostname, created_at, last_used_at, revoked_at";

#[derive(FromRow)]
struct AuditRow {
    id: i64,
    at: i64,
    actor: String,
    hostname: String,
    pid: i64,
    process_name: Option<String>,
    action: String,
    tree: bool,
    result: String,
    message: String,
}

impl AuditRow {
    fn entry(self) -> Result<AuditEntry> {
        let action = self
            .action
            .parse::<AuditAction>()
            .map_err(|e| StoreError::Corrupt(format!("audit entry {}: {e}", self.id)))?;
        Ok(AuditEntry {
            id: self.id,
            at: from_ms(self.at),
            actor: self.actor,
            hostname: self.hostname,
            pid: Some(to_u32(self.pid)).filter(|&pid| pid != 0),
            process_name: self.process_name,
            action,
            tree: self.tree,
            result: self.result,
            message: self.message,
        })
    }
}

const AUDIT_COLUMNS: &str = "id, at, actor, hostname, pid, process_name, action, tree, result, message";

impl Store {
    /// Creates a user with an already hashed password. A taken name, or one equal to a
    /// user's name ignoring ASCII case (`Admin` beside `admin`), is a
    /// [`StoreError::Conflict`] naming the existing user.
    pub async fn create_user(&self, username: &str, password_hash: &str, role: Role) -> Result<UserSummary> {
        let _turn = self.turn().await;
        let created = now_ms();
        // The check and the insert are one statement, so one transaction: no user named
        // alike can be added in between. Not a unique index: databases made before may
        // hold names that differ only in case, and those stay as they are.
        let id: Option<i64> =
            on!(&self.pool, |c| sqlx::query_scalar(&format!(
                "INSERT INTO users (username, password_hash, role, created_at, token_generation) \
             SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS (SELECT 1 FROM users WHERE {}) RETURNING id",
                self.pool.ascii_nocase("username", "$6")
            ))
            .bind(username)
            .bind(password_hash)
            .bind(role.as_str())
            .bind(created)
            .bind(new_generation())
            .bind(username)
            .fetch_optional(c)
            .await)
            .map_err(|e| {
                if is_unique_violation(&e) { StoreError::Conflict(format!("user `{username}`")) } else { e.into() }
            })?;
        let Some(id) = id else {
            let existing: Option<String> = on!(&self.pool, |c| sqlx::query_scalar(&format!(
                "SELECT username FROM users WHERE {} ORDER BY id LIMIT 1",
                self.pool.ascii_nocase("username", "$1")
            ))
            .bind(username)
            .fetch_optional(c)
            .await)?;
            return Err(StoreError::Conflict(match existing {
                Some(existing) if existing != username => format!(
                    "user `{username}` cannot be added: user names are compared ignoring case (the failed sign-in \
                     ledger and the audit log could not tell them apart), and user `{existing}`"
                ),
                _ => format!("user `{username}`"),
            }));
        };
        Ok(UserSummary { id, username: username.to_owned(), role, created_at: from_ms(created) })
    }

    /// Every user, by name.
    pub async fn users(&self) -> Result<Vec<UserSummary>> {
        let rows: Vec<UserRow> =
            on!(&self.pool, |c| sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY username"))
                .fetch_all(c)
                .await)?;
        rows.into_iter().map(|r| r.record().map(|r| r.summary)).collect()
    }

    /// A user with the password hash, for signing in.
    pub async fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>> {
        let row: Option<UserRow> =
            on!(&self.pool, |c| sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1"))
                .bind(username)
                .fetch_optional(c)
                .await)?;
        row.map(UserRow::record).transpose()
    }

    /// Deletes a user, their dashboards with them, and their name from dashboards
    /// shared with them (one transaction: a user made later under the same name starts
    /// with none of either).
    /// Refused with [`StoreError::LastAdmin`] for the last admin: nobody could manage
    /// users and keys any more.
    pub async fn remove_user(&self, username: &str) -> Result<()> {
        let mut write = self.write().await?;
        let done =
            on!(write.conn(), |c| sqlx::query(&format!("DELETE FROM users WHERE username = $1 AND {NOT_LAST_ADMIN}"))
                .bind(username)
                .execute(c)
                .await
                .map(|d| d.rows_affected()))?;
        if done > 0 {
            Store::forget_dashboard_user(&mut write, username).await?;
            write.commit().await?;
            return Ok(());
        }
        drop(write);
        self.changed_or_why(done, username).await
    }

    /// `Ok` when a statement on `username` changed a row; else why not: no such user,
    /// or the user is the last admin.
    async fn changed_or_why(&self, rows: u64, username: &str) -> Result<()> {
        if rows > 0 {
            return Ok(());
        }
        match self.user_by_name(username).await? {
            Some(_) => Err(StoreError::LastAdmin(username.to_owned())),
            None => Err(StoreError::NotFound(format!("user `{username}`"))),
        }
    }

    /// Replaces a user's password hash; the user's earlier tokens stop working.
    pub async fn set_password(&self, username: &str, password_hash: &str) -> Result<()> {
        let _turn = self.turn().await;
        let done = on!(&self.pool, |c| sqlx::query(
            "UPDATE users SET password_hash = $1, token_generation = $2 WHERE username = $3"
        )
        .bind(password_hash)
        .bind(new_generation())
        .bind(username)
        .execute(c)
        .await
        .map(|d| d.rows_affected()))?;
        found(done, || format!("user `{username}`"))
    }

    /// Changes a user's role; the user's earlier tokens stop working (and with them the
    /// user's open streams), so the new role takes effect everywhere at once.
    pub async fn set_role(&self, username: &str, role: Role) -> Result<()> {
        let _turn = self.turn().await;
        let done = on!(&self.pool, |c| {
            sqlx::query(&format!(
            "UPDATE users SET role = $1, token_generation = $2 WHERE username = $3 AND ($4 = 'admin' OR {NOT_LAST_ADMIN})"
        ))
        .bind(role.as_str())
        .bind(new_generation())
        .bind(username)
        .bind(role.as_str())
        .execute(c).await.map(|d| d.rows_affected())
        })?;
        self.changed_or_why(done, username).await
    }

    /// Number of users (none yet means the first admin is still to be made).
    pub async fn user_count(&self) -> Result<i64> {
        Ok(on!(&self.pool, |c| sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(c).await)?)
    }

    /// Records a new upload key by its hash. `name` must be unique among keys not revoked
    /// ([`StoreError::Conflict`] otherwise); `hostname` makes the key one host's, and
    /// reserves that host for it at once (see [`Store::reserve_host`]), so that no other
    /// key can report as the host first. Nothing is stored if either fails.
    pub async fn create_api_key(
        &self,
        name: &str,
        prefix: &str,
        key_hash: &str,
        hostname: Option<&str>,
    ) -> Result<ApiKeySummary> {
        self.create_scoped_api_key(name, prefix, key_hash, hostname, KeyScope::Upload).await
    }

    /// [`Store::create_api_key`] with its scope.
    pub async fn create_scoped_api_key(
        &self,
        name: &str,
        prefix: &str,
        key_hash: &str,
        hostname: Option<&str>,
        scope: KeyScope,
    ) -> Result<ApiKeySummary> {
        let mut tx = self.write().await?;
        let created = now_ms();
        let id: i64 = on!(tx.conn(), |c| sqlx::query_scalar(
            "INSERT INTO api_keys (name, prefix, key_hash, hostname, created_at, scope) VALUES ($1, $2, $3, $4, $5, $6) \
             RETURNING id",
        )
        .bind(name)
        .bind(prefix)
        .bind(key_hash)
        .bind(hostname)
        .bind(created)
        .bind(scope.as_str())
        .fetch_one(c).await)
        .map_err(|e| {
            if is_unique_violation(&e) { StoreError::Conflict(format!("API key `{name}`")) } else { e.into() }
        })?;
        if let Some(host) = hostname {
            super::binding::reserve_host(tx.conn(), host, id, name).await?;
        }
        tx.commit().await?;
        Ok(ApiKeySummary {
            id,
            name: name.to_owned(),
            prefix: prefix.to_owned(),
            scope,
            hostname: hostname.map(str::to_owned),
            created_at: from_ms(created),
            last_used_at: None,
            revoked_at: None,
        })
    }

    /// Every API key, revoked ones included, oldest first.
    pub async fn api_keys(&self) -> Result<Vec<ApiKeySummary>> {
        let rows: Vec<KeyRow> =
            on!(&self.pool, |c| sqlx::query_as(&format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY id"))
                .fetch_all(c)
                .await)?;
        Ok(rows.into_iter().map(ApiKeySummary::from).collect())
    }

    /// The key with this hash, revoked or not: the caller must refuse a key whose
    /// `revoked_at` is set.
    pub async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>> {
        let row: Option<KeyRow> =
            on!(&self.pool, |c| sqlx::query_as(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1"))
                .bind(key_hash)
                .fetch_optional(c)
                .await)?;
        Ok(row.map(|r| ApiKeyRecord { summary: r.into() }))
    }

    /// Revokes the live key with this name or, failing that, the one live key with this
    /// prefix. [`StoreError::NotFound`] if there is none, or if several keys share the
    /// prefix (name one of them instead).
    pub async fn revoke_api_key(&self, name_or_prefix: &str) -> Result<ApiKeySummary> {
        let mut tx = self.write().await?;
        let by_name: Option<i64> =
            on!(tx.conn(), |c| sqlx::query_scalar("SELECT id FROM api_keys WHERE name = $1 AND revoked_at IS NULL")
                .bind(name_or_prefix)
                .fetch_optional(c)
                .await)?;
        let id = match by_name {
            Some(id) => id,
            None => {
                let ids: Vec<i64> = on!(tx.conn(), |c| sqlx::query_scalar(
                    "SELECT id FROM api_keys WHERE prefix = $1 AND revoked_at IS NULL LIMIT 2"
                )
                .bind(name_or_prefix)
                .fetch_all(c)
                .await)?;
                match ids.as_slice() {
                    [id] => *id,
                    [] => return Err(StoreError::NotFound(format!("live API key `{name_or_prefix}`"))),
                    _ => {
                        return Err(StoreError::NotFound(format!(
                            "a single live API key with prefix `{name_or_prefix}` (several match; give the name)"
                        )));
                    }
                }
            }
        };
        let row: KeyRow = on!(tx.conn(), |c| sqlx::query_as(&format!(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 RETURNING {KEY_COLUMNS}"
        ))
        .bind(now_ms())
        .bind(id)
        .fetch_one(c)
        .await)?;
        tx.commit().await?;
        Ok(row.into())
    }

    /// Records that a key was used at `at`.
    pub async fn touch_api_key(&self, id: i64, at: DateTime<Utc>) -> Result<()> {
        let _turn = self.turn().await;
        on!(&self.pool, |c| sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(to_ms(at))
            .bind(id)
            .execute(c)
            .await
            .map(|d| d.rows_affected()))?;
        Ok(())
    }

    /// Writes an audit entry, timed now.
    pub async fn audit(&self, entry: NewAuditEntry) -> Result<AuditEntry> {
        let _turn = self.turn().await;
        let row: AuditRow = on!(&self.pool, |c| sqlx::query_as(&format!(
            "INSERT INTO audit_log (at, actor, hostname, pid, process_name, action, tree, result, message) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {AUDIT_COLUMNS}"
        ))
        .bind(now_ms())
        .bind(&entry.actor)
        .bind(&entry.hostname)
        .bind(i64::from(entry.pid.unwrap_or(0)))
        .bind(&entry.process_name)
        .bind(entry.action.as_str())
        .bind(entry.tree)
        .bind(&entry.result)
        .bind(&entry.message)
        .fetch_one(c)
        .await)?;
        row.entry()
    }

    /// Audit entries of one host (by name) or of all, newest first.
    pub async fn audit_log(&self, host: Option<&str>, page: Page) -> Result<Vec<AuditEntry>> {
        let (limit, offset) = page_limit(page);
        let rows: Vec<AuditRow> = match host {
            Some(host) => on!(&self.pool, |c| sqlx::query_as(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE hostname = $1 ORDER BY id DESC LIMIT $2 OFFSET $3"
            ))
            .bind(host)
            .bind(limit)
            .bind(offset)
            .fetch_all(c)
            .await)?,
            None => on!(&self.pool, |c| sqlx::query_as(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY id DESC LIMIT $1 OFFSET $2"
            ))
            .bind(limit)
            .bind(offset)
            .fetch_all(c)
            .await)?,
        };
        rows.into_iter().map(AuditRow::entry).collect()
    }
}

/// `Ok` if a statement changed a row, else [`StoreError::NotFound`] naming `what`.
fn found(rows: u64, what: impl FnOnce() -> String) -> Result<()> {
    if rows == 0 { Err(StoreError::NotFound(what())) } else { Ok(()) }
}

impl Store {
    /// The token signing key every collector on this database shares, kept in it: the
    /// first to ask stores `candidate` (random, made by the caller), and every later
    /// call, from any collector, gets that same key back. So a token issued by one
    /// collector is valid on every other, with nothing to copy between machines.
    ///
    /// `None` on SQLite: one collector uses a file, and its key stays where it always
    /// was, in the data directory (`token-signing.key`). Keeping it there rather than
    /// adopting it into the file needs no migration and no step on upgrade, and the
    /// tokens of existing installations stay valid.
    pub async fn shared_signing_key(&self, candidate: &[u8]) -> Result<Option<Vec<u8>>> {
        let Db::Postgres(pool) = &self.pool else { return Ok(None) };
        // Two collectors starting at once agree: the second insert does nothing, and
        // both read the first one's key.
        sqlx::query("INSERT INTO secrets (name, value) VALUES ('token-signing', $1) ON CONFLICT (name) DO NOTHING")
            .bind(candidate)
            .execute(pool)
            .await?;
        let key: Vec<u8> =
            sqlx::query_scalar("SELECT value FROM secrets WHERE name = 'token-signing'").fetch_one(pool).await?;
        Ok(Some(key))
    }
}
