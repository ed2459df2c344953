//! Every query of the dashboards (`migrations/sqlite/0008_dashboards.sql`,
//! `migrations/postgres/0004_dashboards.sql`): each belongs to one user, by name, and is
//! deleted with them, their name taken off those shared with them
//! ([`Store::remove_user`]); its sharing and widgets are stored as the
//! API checked them. The owner is a name rather than a reference to an account because
//! the desktop app's person (`desktop:NAME`) has dashboards too and no account.
//!
//! Who may read or change one is the API's decision ([`Dashboard::visible_to`]); the
//! store only keeps them. What it does hold: a user owns at most
//! [`MAX_PER_USER`](crate::model::dashboard::MAX_PER_USER) dashboards.

use chrono::Utc;

use super::db::on;
use super::{Result, Store, StoreError, from_ms, to_ms};
use crate::model::dashboard::{Dashboard, DashboardInput, MAX_PER_USER, Sharing, Widget};

type DashboardRow = (i64, String, String, String, String, String, i64);

const COLUMNS: &str = "id, owner, name, shared, shared_with, widgets, updated_at";

fn corrupt(id: i64, what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("dashboard {id}'s {what}: {e}"))
}

fn dashboard(row: DashboardRow) -> Result<Dashboard> {
    let (id, owner, name, shared, shared_with, widgets, updated_at) = row;
    let shared = Sharing::parse(&shared).ok_or_else(|| corrupt(id, "sharing", &shared))?;
    let shared_with: Vec<String> = serde_json::from_str(&shared_with).map_err(|e| corrupt(id, "users", e))?;
    let widgets: Vec<Widget> = serde_json::from_str(&widgets).map_err(|e| corrupt(id, "widgets", e))?;
    Ok(Dashboard { id, name, owner, shared, shared_with, widgets, updated_at: from_ms(updated_at), read_only: false })
}

fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("dashboard: {e}")))
}

impl Store {
    /// Stores a new dashboard of `owner`'s. Refused when they own [`MAX_PER_USER`]
    /// already.
    pub async fn create_dashboard(&self, owner: &str, input: &DashboardInput) -> Result<Dashboard> {
        let now = to_ms(Utc::now());
        let (shared_with, widgets) = (json(&input.shared_with)?, json(&input.widgets)?);
        let mut write = self.write().await?;
        let owned: i64 = on!(write.conn(), |c| sqlx::query_scalar("SELECT COUNT(*) FROM dashboards WHERE owner = $1")
            .bind(owner)
            .fetch_one(c)
            .await)?;
        if usize::try_from(owned).unwrap_or(usize::MAX) >= MAX_PER_USER {
            return Err(StoreError::Refused(format!(
                "`{owner}` has {MAX_PER_USER} dashboards, the most one user may have: delete one first."
            )));
        }
        let id: i64 = on!(write.conn(), |c| sqlx::query_scalar(
            "INSERT INTO dashboards (owner, name, shared, shared_with, widgets, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING id"
        )
        .bind(owner)
        .bind(&input.name)
        .bind(input.shared.as_str())
        .bind(&shared_with)
        .bind(&widgets)
        .bind(now)
        .fetch_one(c)
        .await)?;
        write.commit().await?;
        Ok(Dashboard {
            id,
            name: input.name.clone(),
            owner: owner.to_owned(),
            shared: input.shared,
            shared_with: input.shared_with.clone(),
            widgets: input.widgets.clone(),
            updated_at: from_ms(now),
            read_only: false,
        })
    }

    /// One dashboard by id, whoever owns it.
    pub async fn dashboard(&self, id: i64) -> Result<Option<Dashboard>> {
        let row: Option<DashboardRow> =
            on!(&self.pool, |c| sqlx::query_as(&format!("SELECT {COLUMNS} FROM dashboards WHERE id = $1"))
                .bind(id)
                .fetch_optional(c)
                .await)?;
        row.map(dashboard).transpose()
    }

    /// The dashboards `username` may see (their own, and those shared with them), by
    /// name. A user owns a bounded number; shared ones are few by nature, but the list is
    /// bounded all the same.
    pub async fn dashboards_visible_to(&self, username: &str) -> Result<Vec<Dashboard>> {
        let rows: Vec<DashboardRow> = on!(&self.pool, |c| sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM dashboards WHERE owner = $1 OR shared <> 'private' ORDER BY name, id LIMIT 10000"
        ))
        .bind(username)
        .fetch_all(c)
        .await)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let d = dashboard(row)?;
            if d.visible_to(username) {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Replaces a dashboard's name, sharing and widgets (its owner stays).
    pub async fn update_dashboard(&self, id: i64, input: &DashboardInput) -> Result<Dashboard> {
        let now = to_ms(Utc::now());
        let (shared_with, widgets) = (json(&input.shared_with)?, json(&input.widgets)?);
        let mut write = self.write().await?;
        let done = on!(write.conn(), |c| sqlx::query(
            "UPDATE dashboards SET name = $2, shared = $3, shared_with = $4, widgets = $5, updated_at = $6 \
             WHERE id = $1"
        )
        .bind(id)
        .bind(&input.name)
        .bind(input.shared.as_str())
        .bind(&shared_with)
        .bind(&widgets)
        .bind(now)
        .execute(c)
        .await
        .map(|d| d.rows_affected()))?;
        if done == 0 {
            return Err(StoreError::NotFound(format!("dashboard {id}")));
        }
        write.commit().await?;
        self.dashboard(id).await?.ok_or_else(|| StoreError::NotFound(format!("dashboard {id}")))
    }

    /// Within a user's removal: deletes their dashboards and takes their name off every
    /// dashboard shared with them, so that a user made later under the same name sees
    /// nothing meant for the one removed.
    pub(super) async fn forget_dashboard_user(write: &mut super::Write, username: &str) -> Result<()> {
        on!(write.conn(), |c| sqlx::query("DELETE FROM dashboards WHERE owner = $1")
            .bind(username)
            .execute(c)
            .await
            .map(drop))?;
        let shared: Vec<(i64, String)> =
            on!(write.conn(), |c| sqlx::query_as("SELECT id, shared_with FROM dashboards WHERE shared = 'users'")
                .fetch_all(c)
                .await)?;
        for (id, names) in shared {
            let mut names: Vec<String> = serde_json::from_str(&names).map_err(|e| corrupt(id, "users", e))?;
            let before = names.len();
            names.retain(|n| n != username);
            if names.len() == before {
                continue;
            }
            let names = json(&names)?;
            on!(write.conn(), |c| sqlx::query("UPDATE dashboards SET shared_with = $2 WHERE id = $1")
                .bind(id)
                .bind(&names)
                .execute(c)
                .await
                .map(drop))?;
        }
        Ok(())
    }

    /// Deletes a dashboard; `false` if there was none.
    pub async fn delete_dashboard(&self, id: i64) -> Result<bool> {
        let _turn = self.turn().await;
        let deleted = on!(&self.pool, |c| sqlx::query("DELETE FROM dashboards WHERE id = $1")
            .bind(id)
            .execute(c)
            .await
            .map(|d| d.rows_affected()))?;
        Ok(deleted > 0)
    }
}
