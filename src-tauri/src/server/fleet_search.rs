//! `GET /api/processes?q=`: a process search over every host, a thin adapter over
//! [`crate::search`].
//!
//! Each host's newest snapshot is searched: the live one the hub holds (no decoding),
//! else the stored one, decoded off the async workers like every heavy read. Hosts go in
//! name order and the search stops once it has `limit` processes, saying where to go on,
//! so one search costs at most the hosts it needs.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use super::AppState;
use super::auth::CurrentUser;
use super::error::ApiError;
use super::query::ApiQuery;
use crate::model::api::{ProcessSearch, ProcessSearchHost};
use crate::model::{ProcessSample, Snapshot};
use crate::search::FleetQuery;
use crate::store::StoreError;

/// Processes returned by default, and at most.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1_000;

/// Longest query: a person types a few words; this keeps a pasted blob out.
const MAX_QUERY_BYTES: usize = 1_024;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct SearchQuery {
    /// The dashboard's filter language (`name:nginx`, `user:www-data`, `cpu>50`, free
    /// text), plus `host:PATTERN` (`*` and `?` wildcards) and `port:N` (a socket with N
    /// as its local or remote port). A malformed word is refused (422).
    #[serde(default)]
    q: String,
    /// Most processes returned, 1 to 1000 (default 100).
    limit: Option<u32>,
    /// Go on from this host name (the `next_hostname` of a search cut short).
    from_hostname: Option<String>,
}

/// One host's matches: how many, and the first `room` of them.
fn search_one(query: &FleetQuery, snapshot: &Snapshot, room: usize) -> (u64, Vec<ProcessSample>) {
    let mut matched = 0u64;
    let mut kept = Vec::new();
    for p in query.matches(snapshot) {
        matched += 1;
        if kept.len() < room {
            kept.push(p.clone());
        }
    }
    (matched, kept)
}

#[utoipa::path(get, path = "/api/processes", tag = "hosts", summary = "Search processes on every host",
    description = "The processes that match `q` in the newest snapshot of each host, grouped by host in name order. \
        The search stops once it has `limit` processes; then `truncated` is true and `next_hostname` is where a \
        search with `from_hostname` goes on. A host with more matches than fit is counted whole in `matched` but \
        returned in part; `host:NAME` searches it alone.",
    params(SearchQuery),
    responses((status = 200, description = "The matches", body = ProcessSearch)))]
pub(super) async fn search_processes(
    State(state): State<AppState>,
    _user: CurrentUser,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> Result<Json<ProcessSearch>, ApiError> {
    if q.q.len() > MAX_QUERY_BYTES {
        return Err(ApiError::invalid("q", format!("The query is longer than {MAX_QUERY_BYTES} bytes.")));
    }
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid("limit", format!("limit must be 1 to {MAX_LIMIT}.")));
    }
    let query = Arc::new(
        FleetQuery::compile(&q.q).map_err(|e| ApiError::invalid("q", format!("The query cannot be used: {e}.")))?,
    );
    let hosts: Vec<_> = state
        .store
        .newest_per_host()
        .await?
        .into_iter()
        .filter(|n| q.from_hostname.as_deref().is_none_or(|f| n.hostname.as_str() >= f))
        .filter(|n| query.host_matches(&n.hostname))
        .collect();

    let limit = limit as usize;
    let mut answer = ProcessSearch {
        query: q.q.clone(),
        hosts: Vec::new(),
        hosts_searched: 0,
        matched: 0,
        returned: 0,
        truncated: false,
        next_hostname: None,
    };
    for newest in hosts {
        let room = limit - answer.returned as usize;
        if room == 0 {
            answer.truncated = true;
            answer.next_hostname = Some(newest.hostname);
            break;
        }
        let found = match state.hub.latest(&newest.hostname) {
            // The live snapshot, when it is at least as new as the stored one.
            Some(p) if p.snapshot_id >= newest.snapshot_id => {
                Some((p.snapshot_id, p.snapshot.taken_at, search_one(&query, &p.snapshot, room)))
            }
            _ => {
                let query = Arc::clone(&query);
                match state
                    .store
                    .snapshot_with(newest.snapshot_id, move |s| {
                        (s.id, s.snapshot.taken_at, search_one(&query, &s.snapshot, room))
                    })
                    .await
                {
                    Ok(found) => found,
                    Err(e @ (StoreError::Busy { .. } | StoreError::Closed)) => return Err(e.into()),
                    // One unreadable snapshot must not hide every other host.
                    Err(e) => {
                        tracing::warn!(host = %newest.hostname, "process search skipped a host: {e}");
                        None
                    }
                }
            }
        };
        answer.hosts_searched += 1;
        let Some((snapshot_id, taken_at, (matched, processes))) = found else { continue };
        if matched == 0 {
            continue;
        }
        answer.matched += matched;
        answer.returned += processes.len() as u64;
        if (processes.len() as u64) < matched {
            answer.truncated = true;
        }
        answer.hosts.push(ProcessSearchHost {
            host_id: newest.host_id,
            online: state.is_online(&newest.hostname),
            hostname: newest.hostname,
            snapshot_id,
            taken_at,
            matched,
            processes,
        });
    }
    Ok(Json(answer))
}
