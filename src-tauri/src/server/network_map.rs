//! `GET /api/network-map?hosts=&from=&to=`: the fleet's network map, a thin adapter
//! over [`crate::netmap`].
//!
//! Which snapshots it reads:
//!
//! - neither `from` nor `to`: **live**, each host's newest snapshot as the hub holds
//!   it (nothing decoded);
//! - `to` alone: **as of that moment**, each host's newest stored snapshot taken at
//!   most [`MOMENT_LOOKBACK`] before it (a host silent for longer is not on the map);
//! - `from` (and `to`, default now): **over the range**, the union of the sockets of
//!   each host's stored snapshots in it. A long range is read at evenly spaced
//!   snapshots, first and last included, at most [`RANGE_SNAPSHOTS`] over all hosts
//!   (each decodes a whole snapshot), and the answer says how many were skipped.
//!
//! Snapshots are reduced to their sockets on the thread that decoded them, one at a
//! time, so a range costs one decoded snapshot of memory plus the union of sockets.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt;
use serde::Deserialize;

use super::AppState;
use super::auth::CurrentUser;
use super::error::ApiError;
use super::query::{self, ApiQuery};
use crate::model::netmap::NetworkMap;
use crate::netmap::{self, HostSockets, Limits};
use crate::store::StoreError;

/// How far before a moment a host's newest snapshot may be and still count.
pub const MOMENT_LOOKBACK: Duration = Duration::minutes(10);

/// Most snapshots decoded for one map over a range, over all hosts together.
pub const RANGE_SNAPSHOTS: usize = 2_000;

/// Most snapshot rows of one host looked at for a range (ids and times only).
const RANGE_ROWS: u32 = 200_000;

/// Most hosts on one map.
pub const MAX_HOSTS: usize = 2_000;

/// Largest `max_nodes` and `max_edges`.
const MAX_LIMIT: u32 = 20_000;

/// Longest `hosts` parameter.
const MAX_HOSTS_PARAM_BYTES: usize = 4_096;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct MapQuery {
    /// Hosts to map: names or patterns (`*` any run of characters, `?` one; case
    /// ignored) separated by commas. Default: every host.
    #[serde(default)]
    hosts: String,
    /// Start of a range: RFC 3339 (without a zone, UTC), a date, epoch seconds, `now` or relative (`-15m`).
    /// With it, the map is the union of the range's snapshots.
    #[serde(default, deserialize_with = "query::time")]
    #[param(value_type = Option<String>)]
    from: Option<DateTime<Utc>>,
    /// End of the range (default now), or alone: the moment to map, in the same forms as `from`. Without
    /// `from` and `to` the map is live.
    #[serde(default, deserialize_with = "query::time")]
    #[param(value_type = Option<String>)]
    to: Option<DateTime<Utc>>,
    /// Most nodes, 1 to 20000 (default 5000).
    max_nodes: Option<u32>,
    /// Most edges, 1 to 20000 (default 5000).
    max_edges: Option<u32>,
}

/// The `hosts` parameter as lower-case patterns (none: every host).
fn host_patterns(hosts: &str) -> Result<Vec<String>, ApiError> {
    if hosts.len() > MAX_HOSTS_PARAM_BYTES {
        return Err(ApiError::invalid("hosts", format!("hosts is longer than {MAX_HOSTS_PARAM_BYTES} bytes.")));
    }
    Ok(hosts.split(',').map(|p| p.trim().to_lowercase()).filter(|p| !p.is_empty()).collect())
}

fn limit(value: Option<u32>, field: &str, default: usize) -> Result<usize, ApiError> {
    match value {
        None => Ok(default),
        Some(v) if (1..=MAX_LIMIT).contains(&v) => Ok(v as usize),
        Some(_) => Err(ApiError::invalid(field, format!("{field} must be 1 to {MAX_LIMIT}."))),
    }
}

/// Evenly spaced picks of `want` out of `len` items, first and last included.
fn spread(len: usize, want: usize) -> Vec<usize> {
    if len <= want {
        return (0..len).collect();
    }
    if want <= 1 {
        return vec![len - 1];
    }
    let mut picks: Vec<usize> = (0..want).map(|i| i * (len - 1) / (want - 1)).collect();
    picks.dedup();
    picks
}

/// Snapshots the live map reads from the store at once (other collectors' hosts that
/// nobody follows here).
const READS_AT_ONCE: usize = 4;

/// A snapshot's sockets as the map read them from the store: `None` when it is gone
/// (retention) or unreadable (logged: one broken snapshot must not hide every other
/// host); an error only when the store cannot answer at all.
fn read_or_skip(
    read: Result<Option<HostSockets>, StoreError>,
    hostname: &str,
) -> Result<Option<HostSockets>, ApiError> {
    match read {
        Ok(read) => Ok(read),
        Err(e @ (StoreError::Busy { .. } | StoreError::Closed)) => Err(e.into()),
        Err(e) => {
            tracing::warn!(host = %hostname, "the network map skipped a snapshot: {e}");
            Ok(None)
        }
    }
}

#[utoipa::path(get, path = "/api/network-map", tag = "hosts", summary = "The fleet's network map",
    description = "Processes as nodes and their connections as edges, joined across hosts: a connection to an \
        address and port another host's process listens on (one of its non-loopback addresses) is one edge \
        between the two processes; loopback joins only within a host; addresses outside the fleet are one node \
        each. Live without `from` and `to`; as of a moment with `to` alone; the union of a range's snapshots with \
        `from`. Bounded by `max_nodes` and `max_edges`: `truncated`, `omitted` and `notes` say what was left out.",
    params(MapQuery),
    responses((status = 200, description = "The map", body = NetworkMap)))]
pub(super) async fn network_map(
    State(state): State<AppState>,
    _user: CurrentUser,
    ApiQuery(q): ApiQuery<MapQuery>,
) -> Result<Json<NetworkMap>, ApiError> {
    let patterns = host_patterns(&q.hosts)?;
    let limits = Limits {
        nodes: limit(q.max_nodes, "max_nodes", Limits::default().nodes)?,
        edges: limit(q.max_edges, "max_edges", Limits::default().edges)?,
    };
    if let (Some(from), Some(to)) = (q.from, q.to)
        && from > to
    {
        return Err(ApiError::invalid("from", "from must be before to."));
    }
    let wanted = move |hostname: &str| {
        let name = hostname.to_lowercase();
        patterns.is_empty() || patterns.iter().any(|p| crate::search::glob(p, &name))
    };

    let skipped_hosts: usize;
    let mut skipped_snapshots = 0u64;
    let mut hosts: Vec<HostSockets> = Vec::new();
    let (live, from, to) = match (q.from, q.to) {
        (None, None) => {
            // Every live host: from the snapshot the hub holds, else (another
            // collector's host that nobody follows here, known by its glance) from the
            // store.
            let mut glances: Vec<_> = state.hub.glances().into_iter().filter(|g| wanted(&g.hostname)).collect();
            glances.sort_by(|a, b| a.hostname.cmp(&b.hostname));
            skipped_hosts = glances.len().saturating_sub(MAX_HOSTS);
            glances.truncate(MAX_HOSTS);
            let (mut published, mut unread) = (Vec::new(), Vec::new());
            for glance in glances {
                match state.hub.latest(&glance.hostname) {
                    Some(p) => published.push(p),
                    None => unread.push(glance),
                }
            }
            hosts = tokio::task::spawn_blocking(move || {
                published.iter().map(|p| HostSockets::from_snapshot(&p.snapshot)).collect()
            })
            .await
            .map_err(|e| ApiError::Internal(format!("the map task failed: {e}")))?;
            // A few at once, as the store's readers allow.
            let reads: Vec<_> = futures_util::stream::iter(unread)
                .map(|glance| {
                    let store = &state.store;
                    async move {
                        let read = store.snapshot_with(glance.snapshot_id, |s| HostSockets::from_snapshot(&s.snapshot));
                        read_or_skip(read.await, &glance.hostname)
                    }
                })
                .buffer_unordered(READS_AT_ONCE)
                .collect()
                .await;
            for read in reads {
                hosts.extend(read?);
            }
            hosts.sort_by(|a, b| a.hostname().cmp(b.hostname()));
            (true, None, None)
        }
        (from, to) => {
            let to = to.unwrap_or_else(Utc::now);
            let moment = from.is_none();
            let start = from.unwrap_or(to - MOMENT_LOOKBACK);
            let mut newest: Vec<_> =
                state.store.newest_per_host().await?.into_iter().filter(|n| wanted(&n.hostname)).collect();
            skipped_hosts = newest.len().saturating_sub(MAX_HOSTS);
            newest.truncate(MAX_HOSTS);
            let per_host = (RANGE_SNAPSHOTS / newest.len().max(1)).max(2);
            for host in newest {
                let times = state.store.snapshot_times(host.host_id, start, to, RANGE_ROWS).await?;
                let picks = if moment {
                    times.len().checked_sub(1).into_iter().collect()
                } else {
                    let picks = spread(times.len(), per_host);
                    skipped_snapshots += (times.len() - picks.len()) as u64;
                    picks
                };
                let mut union: Option<HostSockets> = None;
                for i in picks {
                    let read = state.store.snapshot_with(times[i].0, |s| HostSockets::from_snapshot(&s.snapshot));
                    if let Some(read) = read_or_skip(read.await, &host.hostname)? {
                        match &mut union {
                            Some(u) => u.merge(read),
                            None => union = Some(read),
                        }
                    }
                }
                hosts.extend(union);
            }
            (false, from, Some(to))
        }
    };

    let hosts = Arc::new(hosts);
    let mut map = tokio::task::spawn_blocking(move || netmap::build(&hosts, limits))
        .await
        .map_err(|e| ApiError::Internal(format!("the map task failed: {e}")))?;
    map.live = live;
    map.from = from;
    map.to = to;
    if skipped_hosts > 0 {
        map.omitted.hosts = u32::try_from(skipped_hosts).unwrap_or(u32::MAX);
        map.truncated = true;
        map.notes.push(format!(
            "{skipped_hosts} hosts were left out: a map reads at most {MAX_HOSTS}; name the hosts to see them."
        ));
    }
    if skipped_snapshots > 0 {
        map.omitted.snapshots = skipped_snapshots;
        map.truncated = true;
        map.notes.push(format!(
            "{skipped_snapshots} snapshots of the range were not read: a long range is read at evenly spaced \
             snapshots, at most {RANGE_SNAPSHOTS} over all hosts, so a connection seen only in between may be missing."
        ));
    }
    Ok(Json(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_keeps_the_ends_and_spaces_the_rest() {
        assert_eq!(spread(3, 10), [0, 1, 2]);
        assert_eq!(spread(10, 2), [0, 9]);
        assert_eq!(spread(10, 4), [0, 3, 6, 9]);
        assert_eq!(spread(0, 4), Vec::<usize>::new());
        assert_eq!(spread(5, 1), [4]);
    }
}
