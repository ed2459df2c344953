//! How a stored row leads back to a whole snapshot, and how it is rebuilt from there.
//!
//! A row's `base_id` names the row its body is a delta against (see `ingest`): the host's
//! previous row of the same keyframe window, so a window is a chain that starts with one
//! whole row. Rebuilding a row decodes that whole row and applies every delta after it,
//! in order. Rows written before chains name their window's whole row directly: the same
//! walk, one step long, so old and new rows read alike without a marker.
//!
//! Readers that go through rows in order (ranges, rollups) pass the last snapshot they
//! rebuilt as `known`: the next row's base is usually that one, and costs one delta and
//! no query. A single read walks the chain from the whole row; `ingest` bounds a chain's
//! length ([`super::ingest::MAX_CHAIN`]), so that costs a bounded number of deltas.

use std::sync::Arc;

use super::db::{Conn, on};
use super::{Result, StoreError};
use crate::model::Snapshot;

/// A rebuilt snapshot and the row it is.
pub(super) type Known = (i64, Arc<Snapshot>);

/// What rebuilding one row takes, fetched: where to start and the bodies to decode.
pub(super) struct Chain {
    /// The snapshot the first body is a delta against; `None`: the first body is whole.
    start: Option<Arc<Snapshot>>,
    /// Row ids and bodies, oldest first; the last is the row's own.
    links: Vec<(i64, Vec<u8>)>,
}

/// Most rows one walk follows. Far above any chain `ingest` writes (and old rows are one
/// step long): it only stops a hand-edited file from sending a read round for ever.
const MAX_WALK: i64 = 100_000;

/// Fetches what rebuilding row `id` (its `body` and `base_id` at hand) takes: the bodies
/// of its bases back to a whole row, or back to `known` when the chain passes through it.
/// `None` when a base is gone: the row is past retention and being deleted too.
pub(super) async fn fetch(
    mut conn: Conn<'_>,
    id: i64,
    body: Vec<u8>,
    base_id: Option<i64>,
    known: Option<&Known>,
) -> Result<Option<Chain>> {
    let Some(base) = base_id else {
        return Ok(Some(Chain { start: None, links: vec![(id, body)] }));
    };
    if let Some((known_id, snapshot)) = known
        && *known_id == base
    {
        return Ok(Some(Chain { start: Some(Arc::clone(snapshot)), links: vec![(id, body)] }));
    }
    // The whole walk in one statement. A base always has a smaller id than the row that
    // names it (it existed when that row was inserted), which also ends any cycle.
    let rows: Vec<(i64, Vec<u8>, Option<i64>)> = on!(conn.reborrow(), |c| sqlx::query_as(
        "WITH RECURSIVE chain (id, body, base_id, n) AS ( \
             SELECT id, body, base_id, 1 FROM snapshots WHERE id = $1 AND id < $2 \
             UNION ALL \
             SELECT s.id, s.body, s.base_id, c.n + 1 FROM chain c JOIN snapshots s ON s.id = c.base_id \
             WHERE c.base_id IS DISTINCT FROM $3 AND s.id < c.id AND c.n < $4 \
         ) SELECT id, body, base_id FROM chain ORDER BY n",
    )
    .bind(base)
    .bind(id)
    .bind(known.map(|(k, _)| *k))
    .bind(MAX_WALK)
    .fetch_all(c)
    .await)?;
    let start = match rows.last() {
        None => return Ok(None),
        Some((_, _, None)) => None,
        Some((_, _, Some(next))) => match known {
            Some((known_id, snapshot)) if known_id == next => Some(Arc::clone(snapshot)),
            _ if rows.len() as i64 >= MAX_WALK => {
                return Err(StoreError::Corrupt(format!("snapshot {id}: its chain of bases does not end")));
            }
            // The next base is gone (or out of order, which only a hand-edited file has).
            _ => return Ok(None),
        },
    };
    let mut links: Vec<(i64, Vec<u8>)> = rows.into_iter().rev().map(|(id, body, _)| (id, body)).collect();
    links.push((id, body));
    Ok(Some(Chain { start, links }))
}

impl Chain {
    /// Rebuilds the row, decoding each body with `decode` (given the snapshot before it).
    /// On the calling thread: call it from a blocking one.
    pub(super) fn rebuild(
        self,
        decode: impl Fn(&[u8], Option<&Snapshot>) -> std::result::Result<Snapshot, String>,
    ) -> Result<Snapshot> {
        let mut current = self.start;
        let mut links = self.links.into_iter().peekable();
        while let Some((id, body)) = links.next() {
            let next =
                decode(&body, current.as_deref()).map_err(|e| StoreError::Corrupt(format!("snapshot {id}: {e}")))?;
            if links.peek().is_none() {
                return Ok(next);
            }
            // The one before is dropped here: two snapshots at most are alive at once.
            current = Some(Arc::new(next));
        }
        Err(StoreError::Corrupt("nothing to rebuild".into()))
    }
}
