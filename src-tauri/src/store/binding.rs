//! Host bindings: which API key, and which machine, a host name belongs to.
//!
//! The store only keeps and swaps bindings; who may take a host is decided by the server
//! (`server::binding`). Claiming is compare-and-set, so two agents that report the same
//! new host name at the same moment cannot both win.

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::db::{Conn, Db, on};
use super::{Result, Store, StoreError, from_ms, to_ms};

/// A host's binding, with what the server needs to judge a newcomer.
/// Serialised as the binding routes answer it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct HostBinding {
    /// The host name.
    pub hostname: String,
    /// The API key the host belongs to.
    pub key_id: i64,
    /// That key's label, when the key still exists.
    pub key_name: Option<String>,
    /// Whether that key still exists and is not revoked.
    pub key_live: bool,
    /// The machine's fingerprint, when the agent that bound it sent one.
    pub machine_id: Option<String>,
    /// When the host was bound.
    pub bound_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct BindingRow {
    hostname: String,
    key_id: i64,
    key_name: Option<String>,
    key_live: bool,
    machine_id: Option<String>,
    bound_at: i64,
}

impl From<BindingRow> for HostBinding {
    fn from(r: BindingRow) -> Self {
        HostBinding {
            hostname: r.hostname,
            key_id: r.key_id,
            key_name: r.key_name,
            key_live: r.key_live,
            machine_id: r.machine_id,
            bound_at: from_ms(r.bound_at),
        }
    }
}

const BINDING_SELECT: &str = "SELECT b.hostname, b.key_id, k.name AS key_name, \
     (k.id IS NOT NULL AND k.revoked_at IS NULL) AS key_live, b.machine_id, b.bound_at \
     FROM host_bindings b LEFT JOIN api_keys k ON k.id = b.key_id";

/// Reserves `hostname` for the new key `key_id` (`key_name`), made for that host: binds
/// the host when it is not bound, or bound to a key that is revoked or gone (a rotated
/// key; a machine fingerprint stays, so only that machine may report as the host). A
/// host bound to another live key is refused ([`StoreError::HostTaken`]).
pub(super) async fn reserve_host(mut conn: Conn<'_>, hostname: &str, key_id: i64, key_name: &str) -> Result<()> {
    let current: Option<BindingRow> =
        on!(conn.reborrow(), |c| sqlx::query_as(&format!("{BINDING_SELECT} WHERE b.hostname = $1"))
            .bind(hostname)
            .fetch_optional(c)
            .await)?;
    if let Some(b) = current
        && b.key_live
        && b.key_id != key_id
    {
        return Err(StoreError::HostTaken(format!(
            "Host `{hostname}` is bound to the live API key `{}`, so no key made for it can be created now (nothing \
             was). Revoke `{}` first if it serves only this host (a rotated key), or unbind the host \
             (`procyon host unbind {hostname}`) and create the key `{key_name}` right after.",
            b.key_name.as_deref().unwrap_or("?"),
            b.key_name.as_deref().unwrap_or("?"),
        )));
    }
    upsert(conn.reborrow(), hostname, key_id).await
}

/// Binds `hostname` to `key_id`, keeping the machine fingerprint it had, if any.
async fn upsert(mut conn: Conn<'_>, hostname: &str, key_id: i64) -> Result<()> {
    on!(conn.reborrow(), |c| sqlx::query(
        "INSERT INTO host_bindings (hostname, key_id, machine_id, bound_at) VALUES ($1, $2, NULL, $3) \
         ON CONFLICT (hostname) DO UPDATE SET key_id = excluded.key_id, bound_at = excluded.bound_at",
    )
    .bind(hostname)
    .bind(key_id)
    .bind(to_ms(Utc::now()))
    .execute(c)
    .await
    .map(|d| d.rows_affected()))?;
    Ok(())
}

impl Store {
    /// An admin's binding: `hostname` now belongs to the live key named `key` (or with
    /// that prefix, when one key has it), keeping the machine fingerprint it had. A key
    /// made for another host cannot have it. Returns the new binding.
    pub async fn bind_host(&self, hostname: &str, key: &str) -> Result<HostBinding> {
        let mut tx = self.write().await?;
        let found: Vec<(i64, String, Option<String>)> = on!(tx.conn(), |c| sqlx::query_as(
            // Only upload keys report as hosts: a metrics key cannot own one.
            "SELECT id, name, hostname FROM api_keys WHERE revoked_at IS NULL AND scope = 'upload' \
             AND (name = $1 OR prefix = $1) ORDER BY name = $1 DESC LIMIT 2",
        )
        .bind(key)
        .fetch_all(c)
        .await)?;
        let (id, name, made_for) = match found.as_slice() {
            [one, ..] if one.1 == key => one.clone(),
            [one] => one.clone(),
            [] => return Err(StoreError::NotFound(format!("live upload API key `{key}`"))),
            _ => {
                return Err(StoreError::NotFound(format!(
                    "a single live API key with prefix `{key}` (several match; give the name)"
                )));
            }
        };
        if let Some(other) = made_for.filter(|h| h != hostname) {
            return Err(StoreError::HostTaken(format!(
                "The API key `{name}` is made for host `{other}` and may report as no other, so `{hostname}` cannot \
                 be bound to it."
            )));
        }
        upsert(tx.conn(), hostname, id).await?;
        let row: BindingRow = on!(tx.conn(), |c| sqlx::query_as(&format!("{BINDING_SELECT} WHERE b.hostname = $1"))
            .bind(hostname)
            .fetch_one(c)
            .await)?;
        tx.commit().await?;
        Ok(row.into())
    }

    /// The live key made for `hostname` (`--host`), if there is one: its id and name.
    /// Such a key holds the host even while it is not bound (after an unbind, or for a
    /// key made before keys reserved their host).
    pub async fn key_made_for(&self, hostname: &str) -> Result<Option<(i64, String)>> {
        Ok(on!(&self.pool, |c| sqlx::query_as(
            "SELECT id, name FROM api_keys WHERE hostname = $1 AND revoked_at IS NULL AND scope = 'upload' \
             ORDER BY id LIMIT 1",
        )
        .bind(hostname)
        .fetch_optional(c)
        .await)?)
    }

    /// The binding of `hostname`, if it has one.
    pub async fn host_binding(&self, hostname: &str) -> Result<Option<HostBinding>> {
        let row: Option<BindingRow> =
            on!(&self.pool, |c| sqlx::query_as(&format!("{BINDING_SELECT} WHERE b.hostname = $1"))
                .bind(hostname)
                .fetch_optional(c)
                .await)?;
        Ok(row.map(HostBinding::from))
    }

    /// Binds `hostname` to `key_id` and `machine_id`, if it is still bound as `current`
    /// says (`None`: not bound at all). `false` when someone else changed it first.
    pub async fn claim_host(
        &self,
        hostname: &str,
        key_id: i64,
        machine_id: Option<&str>,
        current: Option<&HostBinding>,
    ) -> Result<bool> {
        let _turn = self.turn().await;
        let now = to_ms(Utc::now());
        let done = match current {
            None => on!(&self.pool, |c| sqlx::query(
                "INSERT INTO host_bindings (hostname, key_id, machine_id, bound_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (hostname) DO NOTHING",
            )
            .bind(hostname)
            .bind(key_id)
            .bind(machine_id)
            .bind(now)
            .execute(c)
            .await
            .map(|d| d.rows_affected()))?,
            Some(old) => on!(&self.pool, |c| sqlx::query(
                "UPDATE host_bindings SET key_id = $1, machine_id = $2, bound_at = $3 \
                     WHERE hostname = $4 AND key_id = $5 AND machine_id IS NOT DISTINCT FROM $6",
            )
            .bind(key_id)
            .bind(machine_id)
            .bind(now)
            .bind(hostname)
            .bind(old.key_id)
            .bind(&old.machine_id)
            .execute(c)
            .await
            .map(|d| d.rows_affected()))?,
        };
        Ok(done == 1)
    }

    /// Forgets the binding of `hostname`: the next agent to report it binds it anew.
    /// `false` if it had none.
    pub async fn reset_host_binding(&self, hostname: &str) -> Result<bool> {
        let _turn = self.turn().await;
        let done = on!(&self.pool, |c| sqlx::query("DELETE FROM host_bindings WHERE hostname = $1")
            .bind(hostname)
            .execute(c)
            .await
            .map(|d| d.rows_affected()))?;
        Ok(done == 1)
    }

    /// A host or bound host name equal to `hostname` ignoring ASCII case (an exact match
    /// first), if there is one.
    pub async fn host_named_alike(&self, hostname: &str) -> Result<Option<String>> {
        // SQLite's NOCASE folds ASCII letters only; PostgreSQL has no such collation, so
        // its text folds the same letters with `ascii_fold` (its migration defines it).
        let sql = match &self.pool {
            Db::Sqlite(_) => {
                "SELECT hostname FROM (SELECT hostname FROM hosts WHERE hostname = $1 COLLATE NOCASE \
                 UNION SELECT hostname FROM host_bindings WHERE hostname = $1 COLLATE NOCASE) \
                 ORDER BY hostname = $1 DESC LIMIT 1"
            }
            Db::Postgres(_) => {
                "SELECT hostname FROM (SELECT hostname FROM hosts WHERE ascii_fold(hostname) = ascii_fold($1) \
                 UNION SELECT hostname FROM host_bindings WHERE ascii_fold(hostname) = ascii_fold($1)) AS alike \
                 ORDER BY hostname = $1 DESC LIMIT 1"
            }
        };
        Ok(on!(&self.pool, |c| sqlx::query_scalar(sql).bind(hostname).fetch_optional(c).await)?)
    }

    /// How many hosts are bound to `key_id`.
    pub async fn hosts_bound_to(&self, key_id: i64) -> Result<i64> {
        Ok(on!(&self.pool, |c| sqlx::query_scalar("SELECT COUNT(*) FROM host_bindings WHERE key_id = $1")
            .bind(key_id)
            .fetch_one(c)
            .await)?)
    }

    /// What a live agent session checks again every few seconds: whether its key `key_id`
    /// still exists unrevoked, and which key `hostname` is bound to now (`None`: to none,
    /// after an unbind). One query, so that the check costs no more than it did.
    pub async fn session_standing(&self, key_id: i64, hostname: &str) -> Result<(bool, Option<i64>)> {
        let row: Option<(bool, Option<i64>)> = on!(&self.pool, |c| {
            sqlx::query_as(
            "SELECT revoked_at IS NULL, (SELECT key_id FROM host_bindings WHERE hostname = $1) FROM api_keys WHERE id = $2",
        )
        .bind(hostname)
        .bind(key_id)
        .fetch_optional(c).await
        })?;
        Ok(row.unwrap_or((false, None)))
    }

    /// Whether the key `id` exists and is not revoked.
    pub async fn api_key_live(&self, id: i64) -> Result<bool> {
        let live: Option<i64> =
            on!(&self.pool, |c| sqlx::query_scalar("SELECT id FROM api_keys WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .fetch_optional(c)
                .await)?;
        Ok(live.is_some())
    }
}
