//! Host labels in the store: the agent's (replaced at each hello) and an admin's
//! (replaced by each edit), per host name. How the two combine is
//! [`crate::model::labels::merged`]; this module only keeps and reads them.

use std::collections::HashMap;

use super::db::on;
use super::{Result, Store};
use crate::model::api::HostSummary;
use crate::model::labels::{self, Labels};

/// Where a host's label came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelSource {
    /// The host's agent (`--label`).
    Agent,
    /// An admin, through the API.
    Admin,
}

impl LabelSource {
    fn as_str(self) -> &'static str {
        match self {
            LabelSource::Agent => "agent",
            LabelSource::Admin => "admin",
        }
    }
}

/// One host's labels from each source.
#[derive(Clone, Debug, Default, PartialEq)]
struct Sources {
    agent: Labels,
    admin: Labels,
}

type LabelRow = (String, String, String, String);

fn group(rows: Vec<LabelRow>) -> HashMap<String, Sources> {
    let mut out: HashMap<String, Sources> = HashMap::new();
    for (hostname, source, key, value) in rows {
        let sources = out.entry(hostname).or_default();
        let map = if source == "admin" { &mut sources.admin } else { &mut sources.agent };
        map.insert(key, value);
    }
    out
}

fn apply(host: &mut HostSummary, sources: Option<&Sources>) {
    let Some(sources) = sources else { return };
    host.labels = labels::merged(&sources.agent, &sources.admin);
    host.admin_labels = sources.admin.clone();
}

impl Store {
    /// Replaces the labels `hostname` has from `source` with `labels` (checked by the
    /// caller: see [`labels::check`]), in one transaction. Returns whether they changed.
    ///
    /// Unchanged labels (an agent reconnecting, the usual case) are read and left alone
    /// without taking the writer's turn, which snapshot ingest needs: a thousand agents
    /// saying hello after a restart do not queue a thousand writes.
    pub async fn set_labels(&self, hostname: &str, source: LabelSource, labels: &Labels) -> Result<bool> {
        let old: Vec<(String, String)> = on!(&self.pool, |c| sqlx::query_as(
            "SELECT key, value FROM host_labels WHERE hostname = $1 AND source = $2"
        )
        .bind(hostname)
        .bind(source.as_str())
        .fetch_all(c)
        .await)?;
        if old.len() == labels.len() && old.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return Ok(false);
        }
        let mut tx = self.write().await?;
        on!(tx.conn(), |c| sqlx::query("DELETE FROM host_labels WHERE hostname = $1 AND source = $2")
            .bind(hostname)
            .bind(source.as_str())
            .execute(c)
            .await
            .map(|d| d.rows_affected()))?;
        for (key, value) in labels {
            on!(tx.conn(), |c| sqlx::query(
                "INSERT INTO host_labels (hostname, source, key, value) VALUES ($1, $2, $3, $4)"
            )
            .bind(hostname)
            .bind(source.as_str())
            .bind(key)
            .bind(value)
            .execute(c)
            .await
            .map(|d| d.rows_affected()))?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Fills in the labels of `hosts` (one query for all of them).
    pub(super) async fn fill_labels(&self, hosts: &mut [HostSummary]) -> Result<()> {
        let rows: Vec<LabelRow> = match hosts {
            [] => return Ok(()),
            [one] => on!(&self.pool, |c| sqlx::query_as(
                "SELECT hostname, source, key, value FROM host_labels WHERE hostname = $1"
            )
            .bind(&one.hostname)
            .fetch_all(c)
            .await)?,
            _ => on!(&self.pool, |c| sqlx::query_as("SELECT hostname, source, key, value FROM host_labels")
                .fetch_all(c)
                .await)?,
        };
        let grouped = group(rows);
        for host in hosts {
            apply(host, grouped.get(&host.hostname));
        }
        Ok(())
    }
}
