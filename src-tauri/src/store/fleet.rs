//! What collectors on one PostgreSQL share through it besides the tables: notifications,
//! which collector holds each agent, relayed process actions, and the maintenance
//! leader. None of it exists on SQLite, whose one collector has no one to share with:
//! there every call here is a no-op or answers "nobody".
//!
//! - Each collector has an id for its run ([`Store::collector_id`], random at open). Its
//!   [`Listener`] holds a session advisory lock on that id for as long as its
//!   connection lives: the database itself says which collectors are alive, and a
//!   collector that dies (its session ends) stops holding anything at once, with no
//!   heartbeat to wait out.
//! - A stored snapshot is announced on `procyon_snapshots` by the transaction that
//!   stores it (see `ingest`): `<collector id>:<host id>:<snapshot id>`, then a space
//!   and what the fleet overview shows of it ([`Announced`], JSON), so that the others
//!   read back from the tables only the snapshots someone follows on them. The JSON is
//!   ours, written from a snapshot already checked as it was received, in ASCII alone
//!   (other characters escaped), so that it converts to any database encoding and its
//!   length is what PostgreSQL counts; where it would not fit a notification (8,000
//!   bytes), the GPUs are left out, and then the figures: the ids go alone and the
//!   others read the snapshot back. Anyone who may connect to the database may also
//!   notify on its channels, so a listener takes an announcement's figures only for a
//!   host it knows by that id and name (see `server::fleet`).
//! - A process action for an agent another collector holds is a row of
//!   `relayed_actions` and a notification to its holder on `procyon_actions`
//!   (`<holder>:<action id>`); the holder carries it out once (it claims the row
//!   first) and writes the outcome, announced on `procyon_answers` (`<action id>`).
//! - A change of the alert rules, channels or silences through one collector is
//!   announced on `procyon_alerts` (`<collector id>`): the others read them again.
//! - Rollups and retention run on the collector holding [`LEADER_LOCK`] ([`Store::lead`]),
//!   on a connection of its own: when that collector dies, its session ends, the lock
//!   is free, and the next collector to try takes it.
//!
//! Notifications are lost while a listener is disconnected: whoever listens catches up
//! from the tables after every (re)connect ([`Store::newest_per_host`],
//! [`Store::unclaimed_actions`]), and a collector waiting for an answer also reads it
//! from its row now and then.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};

use chrono::{DateTime, Utc};

use super::db::Db;
use super::{Result, Store, StoreError, to_ms};
use crate::model::Snapshot;
use crate::model::api::HostFigures;

/// The channel stored snapshots are announced on.
pub(super) const SNAPSHOTS: &str = "procyon_snapshots";
/// The channel relayed actions are announced on, to their holder.
const ACTIONS: &str = "procyon_actions";
/// The channel answers to relayed actions are announced on.
const ANSWERS: &str = "procyon_answers";
/// The channel a change of the alert rules, channels or silences is announced on
/// (`<collector id>`), so that every collector puts the same ones in force.
const ALERTS: &str = "procyon_alerts";

/// The advisory lock whose holder runs the fleet's rollups and retention ("procyon" in
/// ASCII, then 1). Collector ids are chosen never to be it.
const LEADER_LOCK: i64 = 0x7072_6f63_796f_6e01;

/// How long the leader's check of its connection may take before it counts as lost.
const LEADER_CHECK: Duration = Duration::from_secs(10);

/// What a PostgreSQL store knows of its place in the fleet.
pub(super) struct Fleet {
    /// This collector's id for this run.
    pub(super) id: i64,
    /// How to connect: the listener and the leader have connections of their own.
    options: PgConnectOptions,
}

// By hand: the options hold the password.
impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Fleet {
    /// A fleet member with a new random id.
    pub(super) fn new(options: PgConnectOptions) -> Result<Fleet> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes)
            .map_err(|e| StoreError::Refused(format!("no randomness for a collector id: {e}")))?;
        // Positive (ids are written in text and compared as such) and never the leader's.
        let mut id = (u64::from_le_bytes(bytes) >> 2) as i64;
        if id == LEADER_LOCK || id == 0 {
            id = 1;
        }
        Ok(Fleet { id, options })
    }
}

/// What a stored snapshot's notification carries beside its ids.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Announced {
    /// Its host's name.
    pub hostname: String,
    /// When the collector that stored it received it.
    pub received_at: DateTime<Utc>,
    /// The fleet overview's figures of it, the CPU trend holding its own figure only.
    pub figures: HostFigures,
}

/// Longest notification PostgreSQL takes is 7,999 bytes; a little room is kept.
const LONGEST_ANNOUNCEMENT: usize = 7_900;

/// The notification for a stored snapshot (see the module's notes): its ids, then
/// what [`Announced`] holds, or the ids alone when that would not fit.
pub(super) fn announcement(origin: i64, host_id: i64, id: i64, snapshot: &Snapshot, received_ms: i64) -> String {
    let ids = format!("{origin}:{host_id}:{id}");
    let mut announced = Announced {
        hostname: snapshot.host.hostname.clone(),
        received_at: super::from_ms(received_ms),
        figures: HostFigures::of(snapshot),
    };
    let fits = |announced: &Announced| {
        let json = ascii_json(announced)?;
        (ids.len() + 1 + json.len() <= LONGEST_ANNOUNCEMENT).then_some(json)
    };
    let json = fits(&announced).or_else(|| {
        // Many GPUs, each named: the overview does without them.
        announced.figures.gpus.clear();
        fits(&announced)
    });
    match json {
        Some(json) => format!("{ids} {json}"),
        None => ids,
    }
}

/// `value` as JSON in ASCII alone: every other character escaped (`\u00e9`, a pair of
/// escapes past `\uffff`), which JSON allows only inside strings, where serde_json
/// writes such characters as they are.
fn ascii_json(value: &impl serde::Serialize) -> Option<String> {
    let json = serde_json::to_string(value).ok()?;
    if json.is_ascii() {
        return Some(json);
    }
    use std::fmt::Write;
    let mut out = String::with_capacity(json.len() + 32);
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
    Some(out)
}

/// What a [`Listener`] heard.
#[derive(Clone, Debug, PartialEq)]
pub enum FleetEvent {
    /// A snapshot was stored, by the collector `origin`.
    Snapshot {
        /// Which collector stored it.
        origin: i64,
        /// Its host.
        host_id: i64,
        /// Its id.
        snapshot_id: i64,
        /// What the fleet overview shows of it; `None` when it did not fit the
        /// notification (or came from a version that sent ids only): read it back.
        announced: Option<Box<Announced>>,
    },
    /// A process action was asked of the collector `holder`.
    Action {
        /// The collector asked to carry it to its agent.
        holder: i64,
        /// The action's id ([`Store::claim_action`]).
        id: i64,
    },
    /// A relayed action was answered.
    Answered {
        /// The action's id.
        id: i64,
    },
    /// The alert rules, channels or silences were changed through the collector `origin`.
    AlertsChanged {
        /// Which collector.
        origin: i64,
    },
}

/// A connection listening to the fleet's notifications, holding this collector's
/// liveness lock. When it fails, drop it and open another, then catch up: notifications
/// sent meanwhile are gone.
pub struct Listener {
    listener: PgListener,
    /// Its own pool of one connection: dropped with it, which ends the session (and
    /// so the liveness lock).
    pool: sqlx::PgPool,
}

impl Listener {
    /// The next event. An error means the connection is lost (or was, and reconnected
    /// without its lock): drop this listener and open another.
    pub async fn next(&mut self) -> Result<FleetEvent> {
        loop {
            let Some(n) = self.listener.try_recv().await? else {
                return Err(StoreError::Unreachable(
                    "the connection listening to the other collectors was lost".into(),
                ));
            };
            if let Some(event) = parse(n.channel(), n.payload()) {
                return Ok(event);
            }
            // Another program's notification on our channel, or a newer version's:
            // nothing to act on.
            tracing::debug!(channel = n.channel(), "ignored a notification");
        }
    }

    /// Closes the connection (and so releases the liveness lock) now.
    pub async fn close(self) {
        drop(self.listener);
        self.pool.close().await;
    }
}

/// Reads a notification of ours.
fn parse(channel: &str, payload: &str) -> Option<FleetEvent> {
    let (payload, announced) = match payload.split_once(' ') {
        // Figures that cannot be read cost a read back, not the news.
        Some((ids, json)) if channel == SNAPSHOTS => (ids, serde_json::from_str::<Announced>(json).ok()),
        Some(_) => return None,
        None => (payload, None),
    };
    let mut ids = payload.split(':').map(i64::from_str);
    let mut next = || ids.next()?.ok();
    let event = match channel {
        SNAPSHOTS => FleetEvent::Snapshot {
            origin: next()?,
            host_id: next()?,
            snapshot_id: next()?,
            announced: announced.map(Box::new),
        },
        ACTIONS => FleetEvent::Action { holder: next()?, id: next()? },
        ANSWERS => FleetEvent::Answered { id: next()? },
        ALERTS => FleetEvent::AlertsChanged { origin: next()? },
        _ => return None,
    };
    next().is_none().then_some(event)
}

/// The collector holding an agent's channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holder {
    /// Its id.
    pub id: i64,
    /// Whether the agent carries out process actions.
    pub allow_control: bool,
}

/// A relayed action, claimed by its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    /// The host whose agent carries it out.
    pub hostname: String,
    /// The request as JSON, as the asking collector wrote it.
    pub request: String,
    /// How long ago it was asked.
    pub age: Duration,
}

/// The lock of the fleet's maintenance leader, on a connection of its own: held until
/// dropped, or until the connection is lost (then [`Leadership::still_held`] says so).
pub struct Leadership {
    /// The connection holding the lock; `None` on SQLite, whose one collector leads
    /// for as long as it runs.
    conn: Option<PgConnection>,
    /// Lost: the connection failed.
    lost: bool,
}

impl Leadership {
    /// Whether the lock is still this collector's: its session is alive. A session
    /// that answers is the one that took the lock, which a session keeps until it ends.
    pub async fn still_held(&mut self) -> bool {
        if self.lost {
            return false;
        }
        let Some(conn) = self.conn.as_mut() else { return true };
        let alive = matches!(tokio::time::timeout(LEADER_CHECK, conn.ping()).await, Ok(Ok(())));
        if !alive {
            // Whatever is left of the session goes with the connection.
            self.conn = None;
            self.lost = true;
        }
        alive
    }
}

impl Store {
    /// This collector's id in the fleet for this run; `None` on SQLite.
    pub fn collector_id(&self) -> Option<i64> {
        self.fleet.as_ref().map(|f| f.id)
    }

    /// Whether several collectors may share this store (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        self.fleet.is_some()
    }

    /// Starts listening to the other collectors, taking this collector's liveness
    /// lock; `None` on SQLite.
    pub async fn listen(&self) -> Result<Option<Listener>> {
        let Some(fleet) = &self.fleet else { return Ok(None) };
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(super::PG_ACQUIRE_TIMEOUT)
            .connect_with(fleet.options.clone())
            .await?;
        let mut listener = PgListener::connect_with(&pool).await?;
        // A lost connection is the caller's to handle (it must take the lock again and
        // catch up), never reconnected behind its back.
        listener.eager_reconnect(false);
        listener.listen_all([SNAPSHOTS, ACTIONS, ANSWERS, ALERTS]).await?;
        sqlx::query("SELECT pg_advisory_lock($1)").bind(fleet.id).execute(&mut listener).await?;
        Ok(Some(Listener { listener, pool }))
    }

    /// Records that this collector holds `hostname`'s agent channel (no-op on SQLite).
    pub async fn hold_agent(&self, hostname: &str, allow_control: bool) -> Result<()> {
        let (Some(fleet), Db::Postgres(pool)) = (&self.fleet, &self.pool) else { return Ok(()) };
        sqlx::query(
            "INSERT INTO agent_holders (hostname, holder, allow_control, since) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (hostname) DO UPDATE SET holder = $2, allow_control = $3, since = $4",
        )
        .bind(hostname)
        .bind(fleet.id)
        .bind(allow_control)
        .bind(to_ms(chrono::Utc::now()))
        .execute(pool)
        .await?;
        Ok(())
    }

    /// Records that this collector no longer holds `hostname`'s agent channel, unless
    /// another collector took it since (no-op on SQLite).
    pub async fn release_agent(&self, hostname: &str) -> Result<()> {
        let (Some(fleet), Db::Postgres(pool)) = (&self.fleet, &self.pool) else { return Ok(()) };
        sqlx::query("DELETE FROM agent_holders WHERE hostname = $1 AND holder = $2")
            .bind(hostname)
            .bind(fleet.id)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// The live collector, other than this one, holding `hostname`'s agent channel, if
    /// any (always `None` on SQLite). A holder that died holds nothing: alive is a
    /// holder whose liveness lock is granted (`pg_locks` shows a bigint advisory key as
    /// its high and low 32 bits, with `objsubid` 1).
    pub async fn agent_holder(&self, hostname: &str) -> Result<Option<Holder>> {
        let (Some(fleet), Db::Postgres(pool)) = (&self.fleet, &self.pool) else { return Ok(None) };
        let row: Option<(i64, bool)> = sqlx::query_as(
            "SELECT holder, allow_control FROM agent_holders a WHERE hostname = $1 AND holder <> $2 AND EXISTS \
               (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
                  AND l.classid = ((a.holder >> 32) & 4294967295)::oid AND l.objid = (a.holder & 4294967295)::oid)",
        )
        .bind(hostname)
        .bind(fleet.id)
        .fetch_optional(pool)
        .await?;
        Ok(row.map(|(id, allow_control)| Holder { id, allow_control }))
    }

    /// Asks `holder` to carry `request` (JSON) to `hostname`'s agent; the action's id.
    pub async fn ask_action(&self, holder: i64, hostname: &str, request: &str) -> Result<i64> {
        let Db::Postgres(pool) = &self.pool else {
            return Err(StoreError::Refused("actions are relayed through the database on PostgreSQL only".into()));
        };
        let mut tx = pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO relayed_actions (hostname, holder, request, asked_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(hostname)
        .bind(holder)
        .bind(request)
        .bind(to_ms(chrono::Utc::now()))
        .fetch_one(&mut *tx)
        .await?;
        // Delivered when the row is committed, so the holder always finds it.
        sqlx::query("SELECT pg_notify($1, $2)").bind(ACTIONS).bind(format!("{holder}:{id}")).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Claims action `id` for this collector to carry out, if it is this collector's,
    /// nobody claimed it yet, and it was asked less than `max_age` ago (its asker
    /// waits no longer: an action found late is never carried out).
    pub async fn claim_action(&self, id: i64, max_age: Duration) -> Result<Option<Claimed>> {
        let (Some(fleet), Db::Postgres(pool)) = (&self.fleet, &self.pool) else { return Ok(None) };
        let now = to_ms(chrono::Utc::now());
        let oldest = now - i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        let row: Option<(String, String, i64)> = sqlx::query_as(
            "UPDATE relayed_actions SET claimed_at = $1 \
             WHERE id = $2 AND holder = $3 AND claimed_at IS NULL AND asked_at > $4 \
             RETURNING hostname, request, asked_at",
        )
        .bind(now)
        .bind(id)
        .bind(fleet.id)
        .bind(oldest)
        .fetch_optional(pool)
        .await?;
        Ok(row.map(|(hostname, request, asked_at)| Claimed {
            hostname,
            request,
            age: Duration::from_millis(u64::try_from(now - asked_at).unwrap_or(0)),
        }))
    }

    /// Actions asked of this collector, unclaimed, asked less than `max_age` ago (to
    /// catch up after the listener reconnected).
    pub async fn unclaimed_actions(&self, max_age: Duration) -> Result<Vec<i64>> {
        let (Some(fleet), Db::Postgres(pool)) = (&self.fleet, &self.pool) else { return Ok(Vec::new()) };
        let oldest = to_ms(chrono::Utc::now()) - i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        Ok(sqlx::query_scalar(
            "SELECT id FROM relayed_actions WHERE holder = $1 AND claimed_at IS NULL AND asked_at > $2 ORDER BY id",
        )
        .bind(fleet.id)
        .bind(oldest)
        .fetch_all(pool)
        .await?)
    }

    /// Writes the outcome (JSON) of action `id` and tells its asker.
    pub async fn answer_action(&self, id: i64, answer: &str) -> Result<()> {
        let Db::Postgres(pool) = &self.pool else { return Ok(()) };
        let mut tx = pool.begin().await?;
        sqlx::query("UPDATE relayed_actions SET answer = $1, answered_at = $2 WHERE id = $3")
            .bind(answer)
            .bind(to_ms(chrono::Utc::now()))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT pg_notify($1, $2)").bind(ANSWERS).bind(id.to_string()).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The outcome (JSON) of action `id`, once its holder wrote it. Read once: the row
    /// goes with it.
    pub async fn take_answer(&self, id: i64) -> Result<Option<String>> {
        let Db::Postgres(pool) = &self.pool else { return Ok(None) };
        Ok(sqlx::query_scalar("DELETE FROM relayed_actions WHERE id = $1 AND answer IS NOT NULL RETURNING answer")
            .bind(id)
            .fetch_optional(pool)
            .await?)
    }

    /// Gives up waiting for action `id`: its row goes (a holder that has not claimed it
    /// yet never will; one that has writes its answer to no row).
    pub async fn forget_action(&self, id: i64) -> Result<()> {
        let Db::Postgres(pool) = &self.pool else { return Ok(()) };
        sqlx::query("DELETE FROM relayed_actions WHERE id = $1").bind(id).execute(pool).await?;
        Ok(())
    }

    /// Tells the other collectors that the alert rules, channels or silences changed
    /// (no-op on SQLite).
    pub async fn announce_alerts_changed(&self) -> Result<()> {
        let (Some(fleet), Db::Postgres(pool)) = (&self.fleet, &self.pool) else { return Ok(()) };
        sqlx::query("SELECT pg_notify($1, $2)").bind(ALERTS).bind(fleet.id.to_string()).execute(pool).await?;
        Ok(())
    }

    /// Deletes the rows of `agent_holders` whose collector is gone (its liveness lock
    /// is not held: it died, or stopped without a word): part of maintenance. They mean
    /// nothing once their holder is gone ([`Store::agent_holder`] ignores them), but
    /// would pile up with every collector that ever held an agent.
    pub(super) async fn forget_dead_holders(&self) -> Result<u64> {
        let Db::Postgres(pool) = &self.pool else { return Ok(0) };
        Ok(sqlx::query(
            "DELETE FROM agent_holders a WHERE NOT EXISTS \
               (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
                  AND l.classid = ((a.holder >> 32) & 4294967295)::oid AND l.objid = (a.holder & 4294967295)::oid)",
        )
        .execute(pool)
        .await?
        .rows_affected())
    }

    /// Deletes relayed actions asked before `before_ms` whose asker stopped waiting
    /// (it died, say): part of maintenance.
    pub(super) async fn forget_stale_actions(&self, before_ms: i64) -> Result<u64> {
        let Db::Postgres(pool) = &self.pool else { return Ok(0) };
        Ok(sqlx::query("DELETE FROM relayed_actions WHERE asked_at < $1")
            .bind(before_ms)
            .execute(pool)
            .await?
            .rows_affected())
    }

    /// Takes the fleet's maintenance lead if nobody holds it: `Some` while this
    /// collector leads. On SQLite, a store has one collector, which always leads.
    pub async fn lead(&self) -> Result<Option<Leadership>> {
        let Some(fleet) = &self.fleet else { return Ok(Some(Leadership { conn: None, lost: false })) };
        let mut conn = fleet.options.clone().connect().await?;
        let got: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(LEADER_LOCK).fetch_one(&mut conn).await?;
        if got {
            Ok(Some(Leadership { conn: Some(conn), lost: false }))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn notifications_are_read_strictly() {
        let ids_only = FleetEvent::Snapshot { origin: 7, host_id: 2, snapshot_id: 99, announced: None };
        assert_eq!(parse(SNAPSHOTS, "7:2:99"), Some(ids_only.clone()));
        // Figures that cannot be read leave the ids: the snapshot is read back instead.
        assert_eq!(parse(SNAPSHOTS, "7:2:99 {\"hostname\": 5}"), Some(ids_only));
        assert_eq!(parse(ACTIONS, "7:5"), Some(FleetEvent::Action { holder: 7, id: 5 }));
        assert_eq!(parse(ANSWERS, "5"), Some(FleetEvent::Answered { id: 5 }));
        assert_eq!(parse(ALERTS, "7"), Some(FleetEvent::AlertsChanged { origin: 7 }));
        for (channel, payload) in [
            (SNAPSHOTS, "7:2"),
            (SNAPSHOTS, "7:2:3:4"),
            (ACTIONS, "x:5"),
            (ANSWERS, ""),
            (ALERTS, "7:1"),
            (ACTIONS, "7:5 {}"),
            (SNAPSHOTS, "7:2:x {}"),
            ("other", "1"),
        ] {
            assert_eq!(parse(channel, payload), None, "{channel} {payload}");
        }
    }

    #[test]
    fn a_snapshot_is_announced_with_its_figures_when_they_fit() {
        let mut snapshot = crate::sample::Sampler::new(crate::sample::SamplerOptions::default()).sample();
        snapshot.host.hostname = "web 1".into();
        let said = announcement(7, 2, 99, &snapshot, 1_700_000_000_000);
        assert!(said.len() <= LONGEST_ANNOUNCEMENT, "{}", said.len());
        let Some(FleetEvent::Snapshot { origin: 7, host_id: 2, snapshot_id: 99, announced: Some(announced) }) =
            parse(SNAPSHOTS, &said)
        else {
            panic!("{said}")
        };
        assert_eq!(announced.hostname, "web 1");
        assert_eq!(announced.received_at.timestamp_millis(), 1_700_000_000_000);
        assert_eq!(announced.figures, HostFigures::of(&snapshot));
        // Whatever the process names, the notification is ASCII, and reads back the same.
        let busiest = &mut snapshot.processes[0];
        busiest.cpu_percent = Some(f32::MAX);
        busiest.name = "é💣<b>\"x\"".into();
        let said = announcement(7, 2, 99, &snapshot, 0);
        assert!(said.is_ascii() && said.contains("\\u00e9\\ud83d\\udca3"), "{said}");
        let Some(FleetEvent::Snapshot { announced: Some(announced), .. }) = parse(SNAPSHOTS, &said) else {
            panic!("{said}")
        };
        assert_eq!(announced.figures.busiest.unwrap().name, "é💣<b>\"x\"");
        // Many GPUs: the figures go without them.
        let gpu = crate::model::GpuSample {
            id: "0".into(),
            name: "G".repeat(200),
            driver: None,
            utilization_percent: Some(1.0),
            memory_used_bytes: None,
            memory_total_bytes: None,
            temperature_celsius: None,
        };
        snapshot.gpus = vec![gpu; 64];
        let said = announcement(7, 2, 99, &snapshot, 0);
        let Some(FleetEvent::Snapshot { announced: Some(announced), .. }) = parse(SNAPSHOTS, &said) else {
            panic!("{said}")
        };
        assert!(announced.figures.gpus.is_empty() && announced.figures.busiest.is_some());
        // A busiest process whose name would not fit (in the notification, escaped): the
        // ids go alone.
        snapshot.processes[0].name = "é".repeat(LONGEST_ANNOUNCEMENT / 6);
        assert_eq!(announcement(7, 2, 99, &snapshot, 0), "7:2:99");
    }
}
