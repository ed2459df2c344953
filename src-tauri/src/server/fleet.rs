//! Several collectors on one PostgreSQL: what each does for the others, through the
//! database only (see `store::fleet` for the tables, notifications and locks).
//!
//! - **Live snapshots.** Every collector listens to what the others store. Each stored
//!   snapshot is announced with the fleet overview's figures of it, which go to the
//!   hub as the host's glance: every collector shows every host in its overview, live,
//!   at the cost of a notification. The snapshot itself is read back from the database
//!   and published only for hosts someone follows on this collector (a dashboard on
//!   the host, a stream of its snapshots; [`crate::hub::Hub::is_followed`]): reading back
//!   costs more than storing, so a collector that read back every host would spend on
//!   the whole fleet whatever its own share. Several snapshots of a host announced
//!   before they are read are read once, the newest. After its listening connection
//!   was lost, a collector catches up from the tables: each host it follows gets its
//!   newest stored snapshot, and the others' figures come with their next snapshot.
//! - **Process actions.** An action for a host whose agent another collector holds is
//!   written to the database and announced to that collector, which relays it to the
//!   agent exactly as its own REST API would ([`super::agents::Agents::relay`]) and
//!   writes the answer back. The asking collector waits as long as for a local relay,
//!   maps the answer the same way and writes the same audit row.
//! - **Alerts.** A change of the rules, channels or silences through one collector is
//!   announced, and every other reads them again. Each collector evaluates the
//!   snapshots it stores; `host.offline`, which every collector could see, is the
//!   leader's alone.
//! - **Maintenance.** Rollups and retention run on one collector, the leader, chosen by
//!   an advisory lock ([`maintain`]).
//!
//! On SQLite nothing here runs but [`maintain`], whose collector always leads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Notify;

use super::AppState;
use super::agents::RelayError;
use crate::hub::{Glance, Published};
use crate::model::agent::{ActionReply, ActionRequest, DetailsReply, DetailsRequest};
use crate::store::{Announced, FleetEvent, Retention, Store};

/// How long to wait before listening again after the connection was lost.
const RELISTEN_AFTER: Duration = Duration::from_secs(1);
/// How often a collector waiting for a relayed action's answer reads its row, in case
/// the notification was lost.
const ANSWER_POLL: Duration = Duration::from_millis(500);
/// What the holder of an agent leaves of the asker's wait for itself: its answer (a
/// timeout included) reaches the asker before the asker gives up.
const ANSWER_MARGIN: Duration = Duration::from_secs(1);
/// Snapshots read back from the database at once.
const READS_AT_ONCE: usize = 4;

/// The outcome of a relayed action as written to the database: what a local relay
/// returns.
type Outcome = Result<ActionReply, RelayError>;

/// What a collector keeps of the fleet between notifications.
#[derive(Default)]
pub struct Fleet {
    /// Relayed actions this collector waits for, by id.
    waiting: Mutex<HashMap<i64, Arc<Notify>>>,
    /// Snapshots stored elsewhere, announced and not read yet: the newest per host id.
    unread: Mutex<HashMap<i64, i64>>,
    /// Wakes the reader of `unread`.
    announced: Notify,
    /// Host names by host id, as the database has them. Anyone who may connect to the
    /// database may notify on its channels, so an announcement's figures are taken
    /// only for a host known here by both its id and name; a host not known yet has
    /// its snapshot read back (and so becomes known) instead.
    names: Mutex<HashMap<i64, String>>,
}

impl Fleet {
    fn waiting(&self) -> MutexGuard<'_, HashMap<i64, Arc<Notify>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unread(&self) -> MutexGuard<'_, HashMap<i64, i64>> {
        self.unread.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn names(&self) -> MutexGuard<'_, HashMap<i64, String>> {
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the database names host `host_id` `hostname`, as far as this collector
    /// has seen.
    fn knows(&self, host_id: i64, hostname: &str) -> bool {
        self.names().get(&host_id).is_some_and(|n| n == hostname)
    }

    /// Notes what the database names host `host_id`.
    fn learn(&self, host_id: i64, hostname: &str) {
        let mut names = self.names();
        if names.get(&host_id).is_none_or(|n| n != hostname) {
            names.insert(host_id, hostname.to_owned());
        }
    }

    /// Notes a snapshot to read back and publish.
    fn announce(&self, host_id: i64, snapshot_id: i64) {
        let mut unread = self.unread();
        let newest = unread.entry(host_id).or_default();
        *newest = (*newest).max(snapshot_id);
        drop(unread);
        self.announced.notify_one();
    }
}

/// Listens to the other collectors until shutdown (PostgreSQL only: returns at once on
/// SQLite).
pub async fn listen(state: AppState) {
    if !state.store.is_shared() {
        return;
    }
    let mut shutdown = state.shutdown_signal();
    // Ends with this task, however it ends (the collector's stop aborts it).
    let _reader = AbortOnDrop(tokio::spawn(read_announced(state.clone())));
    let mut said_down = false;
    loop {
        let listener = tokio::select! {
            l = state.store.listen() => l,
            _ = shutdown.changed() => break,
        };
        let mut listener = match listener {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                if !said_down {
                    tracing::warn!(
                        "cannot listen to the other collectors (live views of their agents and actions \
                                    relayed through them wait until it works again): {e}"
                    );
                    said_down = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(RELISTEN_AFTER) => continue,
                    _ = shutdown.changed() => break,
                }
            }
        };
        if said_down {
            tracing::info!("listening to the other collectors again");
            said_down = false;
        }
        // What was announced while nobody listened is caught up from the tables.
        catch_up(&state).await;
        loop {
            tokio::select! {
                event = listener.next() => match event {
                    Ok(event) => heard(&state, event),
                    Err(e) => {
                        tracing::warn!("{e}; listening again");
                        break;
                    }
                },
                _ = shutdown.changed() => {
                    listener.close().await;
                    return;
                }
            }
        }
        listener.close().await;
        tokio::select! {
            _ = tokio::time::sleep(RELISTEN_AFTER) => {}
            _ = shutdown.changed() => break,
        }
    }
}

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Acts on one notification.
fn heard(state: &AppState, event: FleetEvent) {
    let me = state.store.collector_id();
    match event {
        // This collector's own snapshots were published as it stored them.
        FleetEvent::Snapshot { origin, host_id, snapshot_id, announced } if Some(origin) != me => {
            let glanced = announced.is_some_and(|a| {
                let Announced { hostname, received_at, figures } = *a;
                state.fleet.knows(host_id, &hostname)
                    && !state.agents.is_connected(&hostname)
                    // A time past now would keep the host online for ever.
                    && state.hub.glance(Glance {
                        hostname,
                        snapshot_id,
                        received_at: received_at.min(Utc::now()),
                        figures,
                        remote: true,
                    })
            });
            // Followed here, not known yet, or announced by ids alone: read it back.
            if !glanced {
                state.fleet.announce(host_id, snapshot_id);
            }
        }
        FleetEvent::Snapshot { .. } => {}
        FleetEvent::Action { holder, id } if Some(holder) == me => {
            tokio::spawn(carry_out(state.clone(), id));
        }
        FleetEvent::Action { .. } => {}
        FleetEvent::Answered { id } => {
            if let Some(waiter) = state.fleet.waiting().get(&id) {
                waiter.notify_one();
            }
        }
        FleetEvent::AlertsChanged { origin } if Some(origin) != me => {
            let alerts = Arc::clone(&state.alerts);
            tokio::spawn(async move { alerts.changed_elsewhere().await });
        }
        FleetEvent::AlertsChanged { .. } => {}
    }
}

/// After (re)connecting: the newest snapshot of every host someone follows here, where
/// the database holds a newer one, the actions asked of it meanwhile, and the alert
/// rules, channels and silences as they are now.
async fn catch_up(state: &AppState) {
    state.alerts.changed_elsewhere().await;
    match state.store.newest_per_host().await {
        Ok(newest) => {
            for n in &newest {
                state.fleet.learn(n.host_id, &n.hostname);
            }
            for n in newest {
                let held = state.hub.latest(&n.hostname).map_or(0, |p| p.snapshot_id);
                if held < n.snapshot_id && state.hub.is_followed(&n.hostname) && !state.agents.is_connected(&n.hostname)
                {
                    state.fleet.announce(n.host_id, n.snapshot_id);
                }
            }
        }
        Err(e) => tracing::warn!("cannot catch up with the other collectors' snapshots: {e}"),
    }
    match state.store.unclaimed_actions(super::rest::RELAY_TIMEOUT).await {
        Ok(ids) => {
            for id in ids {
                tokio::spawn(carry_out(state.clone(), id));
            }
        }
        Err(e) => tracing::warn!("cannot catch up with the actions relayed to this collector: {e}"),
    }
}

/// Reads announced snapshots back from the database and publishes them, newest per
/// host, a few at a time.
async fn read_announced(state: AppState) {
    use futures_util::StreamExt;
    loop {
        state.fleet.announced.notified().await;
        loop {
            let batch: Vec<(i64, i64)> = state.fleet.unread().drain().collect();
            if batch.is_empty() {
                break;
            }
            futures_util::stream::iter(batch)
                .for_each_concurrent(READS_AT_ONCE, |(_, snapshot_id)| publish_stored(&state, snapshot_id))
                .await;
        }
    }
}

/// Publishes stored snapshot `id` unless the hub knows of a newer one of its host, or
/// its host's agent is this collector's (whose snapshots it publishes as it stores them).
async fn publish_stored(state: &AppState, id: i64) {
    let stored = match state.store.snapshot(id).await {
        Ok(Some(stored)) => stored,
        // Deleted meanwhile (the host was): nothing to show.
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(id, "cannot read a snapshot another collector stored: {e}");
            return;
        }
    };
    let hostname = &stored.snapshot.host.hostname;
    state.fleet.learn(stored.host_id, hostname);
    // Newer is told by ids where the hub holds the snapshot, and by the time received
    // where it holds the glance alone (never past now, so a made-up glance cannot hold
    // back what comes after it).
    if state.agents.is_connected(hostname)
        || state.hub.latest(hostname).is_some_and(|p| p.snapshot_id >= id)
        || state.hub.glance_of(hostname).is_some_and(|g| g.received_at > stored.received_at)
    {
        return;
    }
    state.counters.read_back();
    let published = Published::new(stored.id, stored.host_id, stored.received_at, Arc::new(stored.snapshot));
    state.hub.publish(Published { remote: true, ..published });
}

/// What one collector asks another to carry to an agent it holds, as written to
/// `relayed_actions`. A process action is written bare (as before details could be
/// relayed, so collectors of either version read each other's rows); details are
/// wrapped, `{"details": {...}}`, which no action matches.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum Relayed {
    /// One process's details (read-only: carried whatever the agent's `--allow-control`).
    Details {
        /// The request.
        details: DetailsRequest,
    },
    /// A process action.
    Action(ActionRequest),
}

/// Relays `request` to `hostname`'s agent through the collector holding it, waiting up
/// to `timeout`; [`RelayError::Offline`] when no live collector holds it.
pub async fn relay(
    state: &AppState,
    hostname: &str,
    request: &ActionRequest,
    timeout: Duration,
) -> Result<ActionReply, RelayError> {
    let answer = relay_through_holder(state, hostname, &Relayed::Action(request.clone()), timeout).await?;
    serde_json::from_str::<Outcome>(&answer).unwrap_or_else(|e| {
        tracing::warn!(%hostname, "another collector answered a relayed action unreadably: {e}");
        Err(RelayError::Timeout)
    })
}

/// Asks `hostname`'s agent for a process's details through the collector holding it,
/// waiting up to `timeout`; [`RelayError::Offline`] when no live collector holds it.
pub async fn relay_details(
    state: &AppState,
    hostname: &str,
    request: &DetailsRequest,
    timeout: Duration,
) -> Result<DetailsReply, RelayError> {
    let answer = relay_through_holder(state, hostname, &Relayed::Details { details: request.clone() }, timeout).await?;
    serde_json::from_str::<Result<DetailsReply, RelayError>>(&answer).unwrap_or_else(|e| {
        tracing::warn!(%hostname, "another collector answered a relayed details request unreadably: {e}");
        Err(RelayError::Timeout)
    })
}

/// Writes `request` for the collector holding `hostname`'s agent and waits up to
/// `timeout` for its answer (JSON).
async fn relay_through_holder(
    state: &AppState,
    hostname: &str,
    request: &Relayed,
    timeout: Duration,
) -> Result<String, RelayError> {
    let unreachable = |e: crate::store::StoreError| {
        tracing::warn!(%hostname, "cannot relay a request through another collector: {e}");
        RelayError::Offline
    };
    let holder = state.store.agent_holder(hostname).await.map_err(unreachable)?.ok_or(RelayError::Offline)?;
    if matches!(request, Relayed::Action(_)) && !holder.allow_control {
        return Err(RelayError::ControlOff);
    }
    let json = serde_json::to_string(request).map_err(|_| RelayError::Offline)?;
    let deadline = tokio::time::Instant::now() + timeout;
    let id = state.store.ask_action(holder.id, hostname, &json).await.map_err(unreachable)?;
    let woken = Arc::new(Notify::new());
    state.fleet.waiting().insert(id, Arc::clone(&woken));
    let answer = loop {
        match state.store.take_answer(id).await {
            Ok(Some(answer)) => break Some(answer),
            Ok(None) => {}
            Err(e) => tracing::debug!(id, "cannot read a relayed request's answer yet: {e}"),
        }
        if tokio::time::Instant::now() >= deadline {
            break None;
        }
        let _ =
            tokio::time::timeout_at(deadline.min(tokio::time::Instant::now() + ANSWER_POLL), woken.notified()).await;
    };
    state.fleet.waiting().remove(&id);
    answer.ok_or_else(|| {
        let forget = state.store.clone();
        tokio::spawn(async move {
            if let Err(e) = forget.forget_action(id).await {
                tracing::debug!(id, "cannot forget a relayed request: {e}");
            }
        });
        RelayError::Timeout
    })
}

/// Carries out request `id`, asked of this collector by another: relays it to the
/// agent as a local request would be, and writes the outcome back.
async fn carry_out(state: AppState, id: i64) {
    let timeout = super::rest::RELAY_TIMEOUT;
    let claimed = match state.store.claim_action(id, timeout).await {
        Ok(Some(claimed)) => claimed,
        // Claimed already (a notification and a catch-up may both bring it), or too old.
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(id, "cannot take a request relayed to this collector: {e}");
            return;
        }
    };
    let left = timeout.saturating_sub(claimed.age).saturating_sub(ANSWER_MARGIN).max(Duration::from_millis(100));
    let answer = match serde_json::from_str::<Relayed>(&claimed.request) {
        Ok(Relayed::Action(request)) => {
            let outcome: Outcome = state.agents.relay(&claimed.hostname, request, left).await;
            serde_json::to_string(&outcome)
        }
        Ok(Relayed::Details { details }) => {
            serde_json::to_string(&state.agents.relay_details(&claimed.hostname, details, left).await)
        }
        Err(e) => {
            tracing::warn!(id, "a request relayed to this collector is unreadable: {e}");
            serde_json::to_string(&Outcome::Err(RelayError::Offline))
        }
    };
    if let Err(e) = state.store.answer_action(id, &answer.unwrap_or_default()).await {
        tracing::warn!(id, "cannot answer a request relayed to this collector: {e}");
    }
}

/// How often a collector that does not lead tries to, on PostgreSQL: how soon the
/// fleet's maintenance moves on when its leader dies.
const LEAD_EVERY: Duration = Duration::from_secs(5);
/// How often maintenance runs.
const MAINTAIN_EVERY: Duration = Duration::from_secs(60);

/// Runs rollups and retention every [`MAINTAIN_EVERY`] while this collector leads the
/// fleet (always, on SQLite), and what each collector does for its own memory always.
/// The leader also evaluates `host.offline` for the fleet (`alerts`).
pub async fn maintain(
    store: Store,
    hub: crate::hub::Hub,
    retention: Retention,
    alerts: Arc<crate::alert::service::Alerts>,
) {
    let mut tick = tokio::time::interval(if store.is_shared() { LEAD_EVERY } else { MAINTAIN_EVERY });
    let mut lead: Option<crate::store::Leadership> = None;
    let mut last_run: Option<tokio::time::Instant> = None;
    loop {
        tick.tick().await;
        if let Some(held) = lead.as_mut()
            && !held.still_held().await
        {
            lead = None;
            alerts.lead(false);
            tracing::warn!("this collector lost the lead of the fleet's maintenance (its database connection)");
        }
        if lead.is_none() {
            match store.lead().await {
                Ok(Some(held)) => {
                    if store.is_shared() {
                        tracing::info!("this collector now runs rollups and retention for the fleet");
                    }
                    lead = Some(held);
                    alerts.lead(true);
                    last_run = None;
                }
                Ok(None) => {}
                Err(e) => tracing::debug!("cannot try to lead the fleet's maintenance: {e}"),
            }
        }
        if last_run.is_some_and(|t| t.elapsed() < MAINTAIN_EVERY.saturating_sub(Duration::from_secs(1))) {
            continue;
        }
        last_run = Some(tokio::time::Instant::now());
        // Hosts silent for ten minutes leave the live view (their history stays).
        hub.forget_idle(Utc::now() - chrono::Duration::minutes(10));
        if lead.is_some() {
            match store.maintain(Utc::now(), &retention).await {
                Ok(m) => tracing::debug!(?m, "maintenance"),
                Err(e) => tracing::warn!("maintenance failed: {e}"),
            }
        } else {
            store.settle_tips(Utc::now(), &retention);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relayed_action_is_written_bare_and_details_wrapped() {
        let action = ActionRequest {
            request_id: 0,
            pid: 42,
            start_time: None,
            action: crate::model::ProcessAction::Kill,
            tree: false,
            actor: "ann".into(),
        };
        let bare = serde_json::to_string(&action).unwrap();
        // What a collector of the previous version writes and reads.
        assert_eq!(serde_json::to_string(&Relayed::Action(action.clone())).unwrap(), bare);
        assert!(matches!(serde_json::from_str(&bare), Ok(Relayed::Action(a)) if a == action));
        let details = DetailsRequest { request_id: 0, pid: 42, start_time: None, actor: "ann".into() };
        let wrapped = serde_json::to_string(&Relayed::Details { details: details.clone() }).unwrap();
        assert!(wrapped.starts_with("{\"details\":"), "{wrapped}");
        assert!(matches!(serde_json::from_str(&wrapped), Ok(Relayed::Details { details: d }) if d == details));
        // Details are never read as an action (which an old collector would carry out).
        assert!(serde_json::from_str::<ActionRequest>(&wrapped).is_err());
    }
}
