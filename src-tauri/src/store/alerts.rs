//! Every query of the alerts (`migrations/sqlite/0006_alerts.sql`, `migrations/postgres/0002_alerts.sql`): rules and channels made
//! through the API, the state of each (rule, host, process), the history of firings and
//! resolutions, notification attempts and silences; and the notifications held through
//! channels' quiet hours (`0009_alert_held.sql`, `0007_alert_held.sql`).
//!
//! Written so that PostgreSQL takes the same text: numbered parameters (`$1`),
//! `ON CONFLICT ... DO UPDATE`, times as integer unix milliseconds, no SQLite-only
//! functions.

use chrono::{DateTime, Utc};

use super::db::on;
use super::{Page, Result, Store, StoreError, from_ms, page_limit, to_ms};
use crate::alert::rule::{AlertChannel, AlertRule, Severity};
use crate::alert::status::{Alert, AlertDelivery, AlertEvent, AlertState, DeliveryResult, Silence};

/// One change of an alert's state to store.
#[derive(Clone, Debug, PartialEq)]
pub struct StateChange {
    /// The rule.
    pub rule: String,
    /// The host.
    pub hostname: String,
    /// The process label (`""` for a host measure).
    pub process: String,
    /// The rule's severity.
    pub severity: Severity,
    /// The new state; `None` removes the row (a pending alert that stopped holding).
    pub state: Option<AlertState>,
    /// Pending: since the condition held; firing: when it fired.
    pub since_ms: i64,
    /// The value.
    pub value: f64,
    /// When people were last told.
    pub notified_ms: Option<i64>,
    /// When this happened.
    pub at_ms: i64,
    /// Also an event in the history (firing, resolved).
    pub event: bool,
}

/// One notification attempt to store.
#[derive(Clone, Debug, PartialEq)]
pub struct NewDelivery {
    /// The channel.
    pub channel: String,
    /// The rule (`""` for a test).
    pub rule: String,
    /// The host (`""` for a test).
    pub hostname: String,
    /// The process label.
    pub process: String,
    /// `firing`, `resolved` or `test`.
    pub status: String,
    /// 1, 2, ...
    pub attempt: u32,
    /// How it went.
    pub result: DeliveryResult,
    /// Why it failed.
    pub error: Option<String>,
}

fn severity(s: &str) -> Severity {
    match s {
        "info" => Severity::Info,
        "critical" => Severity::Critical,
        _ => Severity::Warning,
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

type AlertRow = (String, String, String, String, String, i64, f64, Option<i64>, Option<i64>);

fn alert(row: AlertRow) -> Result<(Alert, Option<i64>)> {
    let (rule, hostname, process, state, sev, since, value, notified_at, resolved_at) = row;
    let state = state.parse::<AlertState>().map_err(|e| corrupt("alert state", e))?;
    Ok((
        Alert {
            state,
            rule,
            hostname,
            process,
            severity: severity(&sev),
            value,
            since: from_ms(since),
            resolved_at: resolved_at.map(from_ms),
        },
        notified_at,
    ))
}

const ALERT_COLUMNS: &str = "rule, hostname, process, state, severity, since, value, notified_at, resolved_at";

type SilenceRow = (i64, Option<String>, Option<String>, i64, String, String, i64);

fn silence(row: SilenceRow) -> Silence {
    let (id, rule, hostname, ends_at, comment, created_by, created_at) = row;
    Silence { id, rule, hostname, ends_at: from_ms(ends_at), comment, created_by, created_at: from_ms(created_at) }
}

impl Store {
    /// Rules made through the API, by name.
    pub async fn alert_rules(&self) -> Result<Vec<AlertRule>> {
        let rows: Vec<(String, String)> =
            on!(&self.pool, |c| sqlx::query_as("SELECT name, body FROM alert_rules ORDER BY name").fetch_all(c).await)?;
        rows.into_iter()
            .map(|(name, body)| serde_json::from_str(&body).map_err(|e| corrupt(&format!("alert rule {name}"), e)))
            .collect()
    }

    /// Stores a rule: a new one (`create`; a taken name is a conflict) or a change of an
    /// existing one (a missing one is not found).
    pub async fn put_alert_rule(&self, rule: &AlertRule, create: bool) -> Result<()> {
        let mut body = serde_json::to_value(rule).map_err(|e| corrupt("alert rule", e))?;
        // What answers add, not part of the rule.
        if let Some(map) = body.as_object_mut() {
            map.remove("read_only");
        }
        self.put_named("alert_rules", "alert rule", &rule.name, &body.to_string(), create).await
    }

    /// Deletes a rule and its alerts' state; `false` if there was none.
    pub async fn delete_alert_rule(&self, name: &str) -> Result<bool> {
        let mut write = self.write().await?;
        let deleted = on!(write.conn(), |c| sqlx::query("DELETE FROM alert_rules WHERE name = $1")
            .bind(name)
            .execute(c)
            .await
            .map(|d| d.rows_affected()))?;
        on!(write.conn(), |c| sqlx::query("DELETE FROM alert_state WHERE rule = $1")
            .bind(name)
            .execute(c)
            .await
            .map(drop))?;
        write.commit().await?;
        Ok(deleted > 0)
    }

    /// Channels made through the API, secrets included (callers mask them).
    pub async fn alert_channels(&self) -> Result<Vec<AlertChannel>> {
        let rows: Vec<(String, String)> =
            on!(&self.pool, |c| sqlx::query_as("SELECT name, body FROM alert_channels ORDER BY name")
                .fetch_all(c)
                .await)?;
        rows.into_iter()
            .map(|(name, body)| serde_json::from_str(&body).map_err(|e| corrupt(&format!("alert channel {name}"), e)))
            .collect()
    }

    /// Stores a channel, as [`Store::put_alert_rule`] does a rule.
    pub async fn put_alert_channel(&self, channel: &AlertChannel, create: bool) -> Result<()> {
        // The token is left out of the type's JSON everywhere else: stored beside it.
        let mut body = serde_json::to_value(channel).map_err(|e| corrupt("alert channel", e))?;
        if let (Some(token), Some(map)) = (&channel.token, body.as_object_mut()) {
            map.insert("token".into(), token.clone().into());
        }
        // So is the email password.
        if let (Some(password), Some(email)) = (
            channel.email.as_ref().and_then(|e| e.password.as_ref()),
            body.get_mut("email").and_then(|e| e.as_object_mut()),
        ) {
            email.insert("password".into(), password.clone().into());
            email.remove("password_set");
        }
        if let Some(map) = body.as_object_mut() {
            map.remove("token_set");
            map.remove("read_only");
        }
        self.put_named("alert_channels", "alert channel", &channel.name, &body.to_string(), create).await
    }

    /// Deletes a channel; `false` if there was none.
    pub async fn delete_alert_channel(&self, name: &str) -> Result<bool> {
        let _turn = self.turn().await;
        let deleted = on!(&self.pool, |c| sqlx::query("DELETE FROM alert_channels WHERE name = $1")
            .bind(name)
            .execute(c)
            .await
            .map(|d| d.rows_affected()))?;
        Ok(deleted > 0)
    }

    async fn put_named(&self, table: &str, what: &str, name: &str, body: &str, create: bool) -> Result<()> {
        let now = to_ms(Utc::now());
        let _turn = self.turn().await;
        let sql = if create {
            format!("INSERT INTO {table} (name, body, updated_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
        } else {
            format!("UPDATE {table} SET body = $2, updated_at = $3 WHERE name = $1")
        };
        let done = on!(&self.pool, |c| sqlx::query(&sql)
            .bind(name)
            .bind(body)
            .bind(now)
            .execute(c)
            .await
            .map(|d| d.rows_affected()))?;
        match (done, create) {
            (0, true) => Err(StoreError::Conflict(format!("{what} `{name}`"))),
            (0, false) => Err(StoreError::NotFound(format!("{what} `{name}`"))),
            _ => Ok(()),
        }
    }

    /// Every stored alert state with when it was last notified, for the engine at start.
    pub async fn alert_states(&self) -> Result<Vec<(Alert, Option<i64>)>> {
        let rows: Vec<AlertRow> =
            on!(&self.pool, |c| sqlx::query_as(&format!("SELECT {ALERT_COLUMNS} FROM alert_state"))
                .fetch_all(c)
                .await)?;
        rows.into_iter().map(alert).collect()
    }

    /// Alerts pending or firing, and those resolved since `resolved_since`, firing
    /// first, newest first.
    pub async fn alerts(&self, resolved_since: DateTime<Utc>) -> Result<Vec<Alert>> {
        let rows: Vec<AlertRow> = on!(&self.pool, |c| sqlx::query_as(&format!(
            "SELECT {ALERT_COLUMNS} FROM alert_state WHERE state <> 'resolved' OR resolved_at >= $1 \
             ORDER BY CASE state WHEN 'firing' THEN 0 WHEN 'pending' THEN 1 ELSE 2 END, since DESC LIMIT 10000"
        ))
        .bind(to_ms(resolved_since))
        .fetch_all(c)
        .await)?;
        rows.into_iter().map(|r| alert(r).map(|(a, _)| a)).collect()
    }

    /// Stores a batch of state changes (and their events) in one transaction. Resolved
    /// rows older than `forget_before` are removed on the way.
    pub async fn apply_alert_changes(&self, changes: &[StateChange], forget_before: DateTime<Utc>) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut write = self.write().await?;
        for c in changes {
            match c.state {
                None => {
                    on!(write.conn(), |conn| sqlx::query(
                        "DELETE FROM alert_state WHERE rule = $1 AND hostname = $2 AND process = $3"
                    )
                    .bind(&c.rule)
                    .bind(&c.hostname)
                    .bind(&c.process)
                    .execute(conn)
                    .await
                    .map(drop))?;
                }
                Some(state) => {
                    let resolved_at = (state == AlertState::Resolved).then_some(c.at_ms);
                    on!(write.conn(), |conn| sqlx::query(
                        "INSERT INTO alert_state (rule, hostname, process, state, severity, since, value, notified_at, \
                         resolved_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                         ON CONFLICT (rule, hostname, process) DO UPDATE SET state = excluded.state, \
                         severity = excluded.severity, since = excluded.since, value = excluded.value, \
                         notified_at = COALESCE(excluded.notified_at, alert_state.notified_at), \
                         resolved_at = excluded.resolved_at",
                    )
                    .bind(&c.rule)
                    .bind(&c.hostname)
                    .bind(&c.process)
                    .bind(state.as_str())
                    .bind(c.severity.as_str())
                    .bind(c.since_ms)
                    .bind(c.value)
                    .bind(c.notified_ms)
                    .bind(resolved_at)
                    .execute(conn)
                    .await
                    .map(drop))?;
                    if c.event {
                        on!(write.conn(), |conn| sqlx::query(
                            "INSERT INTO alert_events (rule, hostname, process, severity, state, value, since, at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        )
                        .bind(&c.rule)
                        .bind(&c.hostname)
                        .bind(&c.process)
                        .bind(c.severity.as_str())
                        .bind(state.as_str())
                        .bind(c.value)
                        .bind(c.since_ms)
                        .bind(c.at_ms)
                        .execute(conn)
                        .await
                        .map(drop))?;
                    }
                }
            }
        }
        on!(write.conn(), |conn| sqlx::query("DELETE FROM alert_state WHERE state = 'resolved' AND resolved_at < $1")
            .bind(to_ms(forget_before))
            .execute(conn)
            .await
            .map(drop))?;
        write.commit().await
    }

    /// Firings and resolutions, newest first.
    pub async fn alert_history(&self, page: Page) -> Result<Vec<AlertEvent>> {
        let (limit, offset) = page_limit(page);
        type Row = (i64, String, String, String, String, String, f64, i64, i64);
        let rows: Vec<Row> = on!(&self.pool, |c| sqlx::query_as(
            "SELECT id, rule, hostname, process, severity, state, value, since, at FROM alert_events \
             ORDER BY id DESC LIMIT $1 OFFSET $2",
        )
        .bind(limit)
        .bind(offset)
        .fetch_all(c)
        .await)?;
        rows.into_iter()
            .map(|(id, rule, hostname, process, sev, state, value, since, at)| {
                Ok(AlertEvent {
                    id,
                    state: state.parse().map_err(|e| corrupt("alert event", e))?,
                    rule,
                    hostname,
                    process,
                    severity: severity(&sev),
                    value,
                    since: from_ms(since),
                    at: from_ms(at),
                })
            })
            .collect()
    }

    /// Records a notification attempt.
    pub async fn record_delivery(&self, d: &NewDelivery) -> Result<()> {
        let _turn = self.turn().await;
        on!(&self.pool, |c| sqlx::query(
            "INSERT INTO alert_deliveries (channel, rule, hostname, process, status, attempt, result, error, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&d.channel)
        .bind(&d.rule)
        .bind(&d.hostname)
        .bind(&d.process)
        .bind(&d.status)
        .bind(i64::from(d.attempt))
        .bind(d.result.as_str())
        .bind(&d.error)
        .bind(to_ms(Utc::now()))
        .execute(c)
        .await
        .map(drop))?;
        Ok(())
    }

    /// Notification attempts, newest first.
    pub async fn alert_deliveries(&self, page: Page) -> Result<Vec<AlertDelivery>> {
        let (limit, offset) = page_limit(page);
        type Row = (i64, String, String, String, String, String, i64, String, Option<String>, i64);
        let rows: Vec<Row> = on!(&self.pool, |c| sqlx::query_as(
            "SELECT id, channel, rule, hostname, process, status, attempt, result, error, at FROM alert_deliveries \
             ORDER BY id DESC LIMIT $1 OFFSET $2",
        )
        .bind(limit)
        .bind(offset)
        .fetch_all(c)
        .await)?;
        rows.into_iter()
            .map(|(id, channel, rule, hostname, process, status, attempt, result, error, at)| {
                Ok(AlertDelivery {
                    id,
                    channel,
                    rule,
                    hostname,
                    process,
                    status,
                    attempt: super::to_u32(attempt),
                    result: result.parse().map_err(|e| corrupt("alert delivery", e))?,
                    error,
                    at: from_ms(at),
                })
            })
            .collect()
    }

    /// Adds a silence.
    pub async fn add_silence(
        &self,
        rule: Option<&str>,
        hostname: Option<&str>,
        ends_at: DateTime<Utc>,
        comment: &str,
        created_by: &str,
    ) -> Result<Silence> {
        let _turn = self.turn().await;
        let row: SilenceRow = on!(&self.pool, |c| sqlx::query_as(
            "INSERT INTO alert_silences (rule, hostname, ends_at, comment, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             RETURNING id, rule, hostname, ends_at, comment, created_by, created_at",
        )
        .bind(rule)
        .bind(hostname)
        .bind(to_ms(ends_at))
        .bind(comment)
        .bind(created_by)
        .bind(to_ms(Utc::now()))
        .fetch_one(c)
        .await)?;
        Ok(silence(row))
    }

    /// Silences that end after `after`, the soonest to end first.
    pub async fn silences(&self, after: DateTime<Utc>) -> Result<Vec<Silence>> {
        let rows: Vec<SilenceRow> = on!(&self.pool, |c| sqlx::query_as(
            "SELECT id, rule, hostname, ends_at, comment, created_by, created_at FROM alert_silences \
             WHERE ends_at > $1 ORDER BY ends_at, id LIMIT 10000",
        )
        .bind(to_ms(after))
        .fetch_all(c)
        .await)?;
        Ok(rows.into_iter().map(silence).collect())
    }

    /// Removes a silence; `None` if there was none.
    pub async fn delete_silence(&self, id: i64) -> Result<Option<Silence>> {
        let _turn = self.turn().await;
        let row: Option<SilenceRow> = on!(&self.pool, |c| sqlx::query_as(
            "DELETE FROM alert_silences WHERE id = $1 \
             RETURNING id, rule, hostname, ends_at, comment, created_by, created_at",
        )
        .bind(id)
        .fetch_optional(c)
        .await)?;
        Ok(row.map(silence))
    }

    /// Deletes alert history older than `before_ms`: firings and resolutions,
    /// notification attempts, and the states of alerts resolved before it. Pending and
    /// firing states are never deleted, however old: they are the alerts in force.
    /// Runs in batches, each its own short transaction, as retention of snapshots does.
    pub(super) async fn expire_alert_history(&self, before_ms: i64) -> Result<u64> {
        const BATCH: i64 = 10_000;
        let statements = [
            "DELETE FROM alert_events WHERE id IN (SELECT id FROM alert_events WHERE at < $1 ORDER BY id LIMIT $2)",
            "DELETE FROM alert_deliveries WHERE id IN \
             (SELECT id FROM alert_deliveries WHERE at < $1 ORDER BY id LIMIT $2)",
        ];
        let mut total = 0;
        for sql in statements {
            loop {
                let _turn = self.turn().await;
                let n = on!(&self.pool, |c| sqlx::query(sql)
                    .bind(before_ms)
                    .bind(BATCH)
                    .execute(c)
                    .await
                    .map(|d| d.rows_affected()))?;
                total += n;
                if n < BATCH as u64 {
                    break;
                }
            }
        }
        let _turn = self.turn().await;
        total +=
            on!(&self.pool, |c| sqlx::query("DELETE FROM alert_state WHERE state = 'resolved' AND resolved_at < $1")
                .bind(before_ms)
                .execute(c)
                .await
                .map(|d| d.rows_affected()))?;
        Ok(total)
    }

    /// Holds a notification back for `channel`'s quiet hours (`body` is its JSON); its id.
    pub async fn hold_notice(&self, channel: &str, body: &str) -> Result<i64> {
        let _turn = self.turn().await;
        let (id,): (i64,) = on!(&self.pool, |c| sqlx::query_as(
            "INSERT INTO alert_held (channel, body, at) VALUES ($1, $2, $3) RETURNING id"
        )
        .bind(channel)
        .bind(body)
        .bind(to_ms(Utc::now()))
        .fetch_one(c)
        .await)?;
        Ok(id)
    }

    /// Every held notification: `(id, channel, body)`, oldest first.
    pub async fn held_notices(&self) -> Result<Vec<(i64, String, String)>> {
        Ok(on!(&self.pool, |c| sqlx::query_as("SELECT id, channel, body FROM alert_held ORDER BY id")
            .fetch_all(c)
            .await)?)
    }

    /// Forgets held notifications once their summary went out (or their channel went).
    pub async fn release_held(&self, ids: &[i64]) -> Result<()> {
        let _turn = self.turn().await;
        for chunk in ids.chunks(500) {
            let list: Vec<String> = chunk.iter().map(i64::to_string).collect();
            // Ids are integers formatted here, never text from outside.
            let sql = format!("DELETE FROM alert_held WHERE id IN ({})", list.join(","));
            on!(&self.pool, |c| sqlx::query(&sql).execute(c).await.map(drop))?;
        }
        Ok(())
    }

    /// Hosts stored with when each was last seen, for `host.offline` after a restart.
    pub async fn hosts_last_seen(&self) -> Result<Vec<(String, i64)>> {
        Ok(on!(&self.pool, |c| sqlx::query_as("SELECT hostname, last_seen FROM hosts").fetch_all(c).await)?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rules_state_and_silences_round_trip_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        rules_state_and_silences_round_trip(Store::open(&dir.path().join("procyon.db")).await.unwrap()).await;
    }

    #[tokio::test]
    async fn rules_state_and_silences_round_trip_on_postgres() {
        if let Some(url) = super::super::test_postgres::database() {
            let db = super::super::Database::from_url(&url).unwrap();
            rules_state_and_silences_round_trip(Store::connect(&db, Default::default()).await.unwrap()).await;
        }
    }

    async fn rules_state_and_silences_round_trip(store: Store) {
        let rule: AlertRule = serde_json::from_value(serde_json::json!({
            "name": "cpu", "metric": "host.cpu_percent", "threshold": 90
        }))
        .unwrap();
        store.put_alert_rule(&rule, true).await.unwrap();
        assert!(matches!(store.put_alert_rule(&rule, true).await, Err(StoreError::Conflict(_))));
        let mut other = rule.clone();
        other.name = "nope".into();
        assert!(matches!(store.put_alert_rule(&other, false).await, Err(StoreError::NotFound(_))));
        assert_eq!(store.alert_rules().await.unwrap(), std::slice::from_ref(&rule));

        let channel: AlertChannel = serde_json::from_value(serde_json::json!({
            "name": "ops", "kind": "ntfy", "url": "https://ntfy.example/topic", "token": "tk"
        }))
        .unwrap();
        store.put_alert_channel(&channel, true).await.unwrap();
        assert_eq!(store.alert_channels().await.unwrap()[0].token.as_deref(), Some("tk"), "kept server-side");

        let change = |state, at_ms, event| StateChange {
            rule: "cpu".into(),
            hostname: "h".into(),
            process: String::new(),
            severity: Severity::Critical,
            state,
            since_ms: 1_000,
            value: 95.0,
            notified_ms: Some(at_ms),
            at_ms,
            event,
        };
        let long_ago = from_ms(0);
        store.apply_alert_changes(&[change(Some(AlertState::Firing), 1_000, true)], long_ago).await.unwrap();
        let alerts = store.alerts(long_ago).await.unwrap();
        assert_eq!((alerts.len(), alerts[0].state, alerts[0].severity), (1, AlertState::Firing, Severity::Critical));
        store.apply_alert_changes(&[change(Some(AlertState::Resolved), 2_000, true)], long_ago).await.unwrap();
        assert_eq!(store.alerts(long_ago).await.unwrap()[0].resolved_at, Some(from_ms(2_000)));
        let history = store.alert_history(Page { limit: 10, offset: 0 }).await.unwrap();
        assert_eq!(history.iter().map(|e| e.state).collect::<Vec<_>>(), [AlertState::Resolved, AlertState::Firing]);
        assert!(store.delete_alert_rule("cpu").await.unwrap());
        assert!(store.alert_states().await.unwrap().is_empty(), "a rule's state goes with it");

        let with_secrets: AlertChannel = serde_json::from_value(serde_json::json!({
            "name": "mail", "kind": "email",
            "email": {"host": "smtp.example", "username": "u", "password": "pw", "from": "a@example.org",
                      "to": ["b@example.org"]}
        }))
        .unwrap();
        store.put_alert_channel(&with_secrets, true).await.unwrap();
        let stored = store.alert_channels().await.unwrap().into_iter().find(|c| c.name == "mail").unwrap();
        assert_eq!(stored.email.unwrap().password.as_deref(), Some("pw"), "the password is kept server-side");

        let a = store.hold_notice("mail", "{\"n\":1}").await.unwrap();
        let b = store.hold_notice("ops", "{\"n\":2}").await.unwrap();
        assert_eq!(
            store.held_notices().await.unwrap(),
            [(a, "mail".into(), "{\"n\":1}".into()), (b, "ops".into(), "{\"n\":2}".into())]
        );
        store.release_held(&[a]).await.unwrap();
        assert_eq!(store.held_notices().await.unwrap().len(), 1);
        store.release_held(&[b]).await.unwrap();
        assert!(store.held_notices().await.unwrap().is_empty());

        let now = Utc::now();
        let s = store.add_silence(Some("cpu"), None, now + chrono::Duration::hours(1), "upgrade", "ada").await.unwrap();
        assert!(s.covers("cpu", "any", now) && !s.covers("mem", "any", now));
        assert_eq!(store.silences(now).await.unwrap().len(), 1);
        assert_eq!(store.delete_silence(s.id).await.unwrap().map(|s| s.id), Some(s.id));
        assert!(store.delete_silence(s.id).await.unwrap().is_none());
    }
}
