//! The spool: a bounded on-disk queue of the snapshots the collector has not yet
//! acknowledged, so that nothing is lost across collector outages and agent restarts.
//!
//! Layout of the directory (mode 0700, the process lists in it are nobody else's
//! business):
//! - `NNNNNNNNNNNNNNNNNNNN.zst`: one snapshot, named by its seq zero-padded to 20 digits
//!   (so names sort like seqs), holding exactly the bytes a keyframe carries on the wire
//!   ([`encode`]); its mtime is the snapshot's `taken_at`, so its age survives restarts
//!   without decompressing it;
//! - `state-NNNNNNNNNNNNNNNNNNNN.json`: the highest seq ever given out (also in its name)
//!   and the drops not yet reported, so a restarted agent continues its sequence even
//!   with an empty spool. Each new seq gets a new file and the old one is removed (the
//!   highest seq among them wins on reading, so no moment is without a complete one).
//!   Older spools have `state.json`, read the same way;
//! - `lock`: held (flock) while a [`Spool`] is open, so two agents cannot share a spool
//!   and hand out the same seqs;
//! - `live`: present while a collector session is live ([`Spool::set_live`]); found on
//!   opening, it means the last run ended in such a session without closing it (a crash),
//!   so seqs above the state file's may have been given out and stored by the collector;
//! - `*.tmp`: a write in progress. Every file is written to a temporary name and renamed,
//!   so a crash leaves at worst a temporary file, removed on the next [`Spool::open`];
//! - `corrupt/`: snapshot files that could not be read back (cut short, or not a
//!   snapshot), set aside for a person to look at rather than retried forever; only the
//!   newest [`CORRUPT_KEPT`] are kept.
//!
//! Other files in the directory (the fallback key file lives in the same state
//! directory by default) are left alone.
//!
//! Durability: a file is written to its temporary name, fsynced, renamed, and then the
//! directory is fsynced, all before the method that wrote it returns. So a snapshot that
//! [`Spool::push`] accepted, and the seq the state file gives out, survive a power cut:
//! without it, the state file could come back older than seqs already sent, and new
//! snapshots would be numbered again under seqs the collector holds (and taken for
//! resends, lost). Costs one flush of the disk per snapshot, which at the agent's
//! intervals is nothing. A file damaged anyway (a disk that lies about flushes) is
//! found on reading and set aside; the collector's `last_seq` still covers a state file
//! that fell behind ([`Spool::bump_seq`]).
//!
//! While a collector session is live ([`Spool::set_live`]), a new snapshot is first
//! kept in memory only: the collector acknowledges it within milliseconds, and then it
//! never touches the disk. Writing it whole (MessagePack, zstd, two fsyncs) was most of
//! the agent's work per tick. One still unacknowledged when the next is pushed, or when
//! the session ends, is written as above; so at most the newest snapshot, taken less than
//! an interval ago, lives in memory alone, and a crash loses at most that one. The state
//! file is not rewritten for each of them either: after a crash in a live session
//! (the `live` file says so) the seqs given out since the state file may be stored at
//! the collector already, so the snapshots taken after the restart are numbered
//! provisionally and moved above the collector's `last_seq` when it is met
//! ([`Spool::provisional_from`]). The state file is still saved every
//! [`LIVE_STATE_EVERY`] snapshots, so it never falls far behind.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use procyon::model::Snapshot;
use serde::{Deserialize, Serialize};

const SNAPSHOT_SUFFIX: &str = ".zst";
const TMP_SUFFIX: &str = ".tmp";
/// The state file of spools written before state files were named by seq.
const STATE_FILE: &str = "state.json";
const STATE_PREFIX: &str = "state-";
const STATE_SUFFIX: &str = ".json";
#[cfg(unix)]
const LOCK_FILE: &str = "lock";
/// Present while a collector session is live ([`Spool::set_live`]).
const LIVE_FILE: &str = "live";
/// While live, the state file is saved at least once per this many snapshots.
const LIVE_STATE_EVERY: u64 = 60;
/// Digits of a seq in a file name: enough for any u64.
const SEQ_DIGITS: usize = 20;
/// The subdirectory for snapshot files that could not be read back.
pub const CORRUPT_DIR: &str = "corrupt";
/// Set-aside files kept in [`CORRUPT_DIR`]; older ones are removed.
pub const CORRUPT_KEPT: usize = 5;
/// Newest snapshots kept decoded in memory, so the uplink can make a delta of a fresh
/// one without reading it back from disk.
const RECENT: usize = 8;

/// The spool's bounds. When either is exceeded the oldest snapshots go first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Total size of the stored (compressed) snapshots.
    pub max_bytes: u64,
    /// Snapshots taken longer ago than this are dropped.
    pub max_age: Duration,
}

/// One stored snapshot, as kept in memory.
#[derive(Clone, Copy, Debug)]
struct Entry {
    bytes: u64,
    taken_at: SystemTime,
}

/// The state file's content.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    last_seq: u64,
    #[serde(default)]
    unreported_dropped: u64,
    /// Set after a crash in a live session: snapshots from this seq on were numbered
    /// without knowing what the collector stored ([`Spool::provisional_from`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    provisional_from: Option<u64>,
}

/// The spool of one agent. Its index lives in memory; every change is on disk before a
/// method returns.
pub struct Spool {
    dir: PathBuf,
    limits: Limits,
    entries: BTreeMap<u64, Entry>,
    bytes: u64,
    last_seq: u64,
    /// Dropped since the last [`Spool::take_dropped`].
    dropped: u64,
    /// Whether the state file says what `last_seq` and `dropped` say.
    state_saved: bool,
    /// The state files on disk (normally one).
    state_files: Vec<PathBuf>,
    /// The newest pushed snapshots that are still stored, decoded (at most [`RECENT`],
    /// plus any not written yet).
    recent: BTreeMap<u64, Arc<Snapshot>>,
    /// Pending snapshots held in `recent` only, not yet written (while live).
    unwritten: std::collections::BTreeSet<u64>,
    /// A collector session is live: new snapshots wait in memory for their ack.
    live: bool,
    /// See [`Spool::provisional_from`].
    provisional_from: Option<u64>,
    /// The last seq the state file was saved with.
    saved_seq: u64,
    /// Held for the spool's lifetime; released when it is dropped.
    #[cfg(unix)]
    _lock: nix::fcntl::Flock<fs::File>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.dir)
            .field("pending", &self.entries.len())
            .field("bytes", &self.bytes)
            .field("last_seq", &self.last_seq)
            .field("dropped", &self.dropped)
            .finish()
    }
}

impl Spool {
    /// Opens (creating, mode 0700) the spool in `dir`, reading what is there: removes
    /// the temporary files of interrupted writes, removes and counts as dropped the
    /// snapshot files that are not a complete zstd frame, then applies `limits`.
    /// Fails if another process has the spool open.
    pub fn open(dir: &Path, limits: Limits) -> anyhow::Result<Spool> {
        create_private_dir(dir).with_context(|| format!("cannot create the spool directory {}", dir.display()))?;
        warn_if_shared(dir);
        #[cfg(unix)]
        let lock = lock(dir)?;

        let (state, state_ok, state_files) = read_state(dir);
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            limits,
            entries: BTreeMap::new(),
            bytes: 0,
            last_seq: state.last_seq,
            dropped: state.unreported_dropped,
            state_saved: state_ok && state_files.len() == 1,
            state_files,
            recent: BTreeMap::new(),
            unwritten: Default::default(),
            live: false,
            provisional_from: state.provisional_from,
            saved_seq: state.last_seq,
            #[cfg(unix)]
            _lock: lock,
        };
        let listing =
            fs::read_dir(dir).with_context(|| format!("cannot read the spool directory {}", dir.display()))?;
        for item in listing {
            let item = item.with_context(|| format!("cannot read the spool directory {}", dir.display()))?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            if is_own_temp_file(name) {
                tracing::debug!(file = name, "removing a file left by an interrupted write");
                let _ = fs::remove_file(item.path());
                continue;
            }
            let Some(seq) = seq_of(name) else { continue };
            // The seq was given out even if the file turns out to be unusable.
            if seq > spool.last_seq {
                spool.last_seq = seq;
                spool.state_saved = false;
            }
            match check_file(&item.path()) {
                Ok(entry) => {
                    spool.bytes += entry.bytes;
                    spool.entries.insert(seq, entry);
                }
                Err(why) => {
                    spool.set_aside_file(seq, &why);
                    spool.dropped += 1;
                    spool.state_saved = false;
                }
            }
        }
        let live_file = dir.join(LIVE_FILE);
        if live_file.exists() {
            // The last run crashed in a live session: its acknowledged snapshots were
            // never written, and it may have given out seqs above every file and the
            // state file. The files it left are its own and keep their seqs.
            if spool.provisional_from.is_none() {
                spool.provisional_from = Some(spool.last_seq + 1);
            }
            spool.state_saved = false;
        }
        if spool.enforce_limits(crate::clock::system_now()) > 0 {
            spool.state_saved = false;
        }
        if !spool.state_saved {
            spool.save_state()?;
        }
        // Only once the state file holds `provisional_from`.
        remove_file_if_exists(&live_file).with_context(|| format!("cannot remove {}", live_file.display()))?;
        Ok(spool)
    }

    /// Starts (`true`) or ends a live collector session. While live, a pushed snapshot
    /// is kept in memory until it is acknowledged ([`Spool::remove`]) or the next one is
    /// pushed, and written only in the second case; ending the session writes what is
    /// still held, and the state file.
    pub fn set_live(&mut self, live: bool) -> anyhow::Result<()> {
        if live == self.live {
            return Ok(());
        }
        let marker = self.dir.join(LIVE_FILE);
        if live {
            write_atomically(&marker, b"", None).with_context(|| format!("cannot write {}", marker.display()))?;
            sync_dir(&self.dir).with_context(|| format!("cannot flush the spool directory {}", self.dir.display()))?;
            self.live = true;
            return Ok(());
        }
        self.write_unwritten()?;
        if !self.state_saved {
            self.save_state()?;
        }
        remove_file_if_exists(&marker).with_context(|| format!("cannot remove {}", marker.display()))?;
        self.live = false;
        Ok(())
    }

    /// Set after an agent crashed in a live session: the seq from which snapshots were
    /// numbered without knowing whether the collector holds those seqs already (from
    /// the crashed run, acknowledged but never written down here). When the collector
    /// says its `last_seq`, those at or below it are numbered anew above it, and this is
    /// cleared ([`Spool::clear_provisional`]).
    pub fn provisional_from(&self) -> Option<u64> {
        self.provisional_from
    }

    /// The collector's `last_seq` has been taken into account.
    pub fn clear_provisional(&mut self) -> anyhow::Result<()> {
        if self.provisional_from.take().is_some() {
            self.state_saved = false;
            self.save_state()?;
        }
        Ok(())
    }

    /// Writes the snapshots held in memory only.
    fn write_unwritten(&mut self) -> anyhow::Result<()> {
        if self.unwritten.is_empty() {
            return Ok(());
        }
        while let Some(&seq) = self.unwritten.first() {
            let Some(snapshot) = self.recent.get(&seq).cloned() else {
                self.unwritten.remove(&seq);
                continue;
            };
            let bytes = encode(&snapshot)?;
            let taken_at = SystemTime::from(snapshot.taken_at);
            if !self.write_making_room(seq, &bytes, taken_at)? {
                // No room even with every older one gone. It may still be acknowledged
                // (it was sent); if so, the drop it is counted as is a false alarm,
                // which is better than holding snapshots in memory without bound.
                tracing::warn!(seq, "the spool disk is full and holds no older snapshot to drop: dropped one");
                self.forget(seq);
                self.dropped += 1;
                continue;
            }
            sync_dir(&self.dir).with_context(|| format!("cannot flush the spool directory {}", self.dir.display()))?;
            self.unwritten.remove(&seq);
            if let Some(entry) = self.entries.get_mut(&seq) {
                entry.bytes = bytes.len() as u64;
                self.bytes += entry.bytes;
            }
        }
        let dropped = self.enforce_limits(crate::clock::system_now());
        if dropped > 0 {
            self.state_saved = false;
        }
        Ok(())
    }

    /// The directory the spool lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The highest seq ever given out (persisted in the state file, written atomically via
    /// rename), so a restarted agent continues its sequence even with an empty spool.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Raises last_seq to at least `seq` (the collector may know a higher one, if this
    /// agent's state was lost).
    pub fn bump_seq(&mut self, seq: u64) -> anyhow::Result<()> {
        if seq > self.last_seq {
            self.last_seq = seq;
            self.state_saved = false;
            self.save_state()?;
        }
        Ok(())
    }

    /// Stores a snapshot (its `seq` must be above [`Spool::last_seq`]; it becomes
    /// last_seq): [`encode`]d, one file named by seq, written to a temporary name then
    /// renamed. Then enforces the limits, dropping the oldest first, and returns how many
    /// this push dropped (the new snapshot itself too, if it alone breaks a limit).
    pub fn push(&mut self, snapshot: &Snapshot) -> anyhow::Result<u64> {
        self.push_shared(Arc::new(snapshot.clone()))
    }

    /// [`Spool::push`], keeping the snapshot in memory too while it is among the newest.
    pub fn push_shared(&mut self, snapshot: Arc<Snapshot>) -> anyhow::Result<u64> {
        // Any still held was not acknowledged within an interval: to disk with it.
        // Both count what they drop in `dropped`.
        let before = self.dropped;
        self.write_unwritten()?;
        if self.live {
            self.hold(&snapshot)?;
        } else {
            self.store(&snapshot)?;
        }
        let dropped = self.dropped.saturating_sub(before);
        if self.entries.contains_key(&snapshot.seq) {
            self.recent.insert(snapshot.seq, snapshot);
            while self.recent.len() > RECENT {
                let Some(oldest) = self.recent.keys().copied().find(|seq| !self.unwritten.contains(seq)) else {
                    break;
                };
                self.recent.remove(&oldest);
            }
        }
        Ok(dropped)
    }

    /// Takes `snapshot` in memory only (live): no file, and no state file but every
    /// [`LIVE_STATE_EVERY`] snapshots (saved before this one is counted in it, so that
    /// the state file never names a seq lost with the memory).
    fn hold(&mut self, snapshot: &Snapshot) -> anyhow::Result<()> {
        let seq = snapshot.seq;
        if seq <= self.last_seq {
            bail!("snapshot seq {seq} is not above the spool's last seq {}", self.last_seq);
        }
        if self.last_seq.saturating_sub(self.saved_seq) >= LIVE_STATE_EVERY
            && let Err(e) = self.save_state()
        {
            tracing::warn!("cannot update the spool's state file: {e:#}");
        }
        self.entries.insert(seq, Entry { bytes: 0, taken_at: SystemTime::from(snapshot.taken_at) });
        self.unwritten.insert(seq);
        self.last_seq = seq;
        self.state_saved = false;
        Ok(())
    }

    /// A stored snapshot, decoded: from memory when it is among the newest. `None` when
    /// it is not in the spool (dropped by the limits meanwhile), or its file turned out
    /// to be unreadable as a snapshot: then it is set aside ([`Spool::set_aside`]) and
    /// the caller goes on with the next. An error only for a failure that may pass (the
    /// file could not be read), so that it is tried again later.
    pub fn snapshot(&mut self, seq: u64) -> anyhow::Result<Option<Arc<Snapshot>>> {
        if let Some(snapshot) = self.recent.get(&seq) {
            return Ok(Some(snapshot.clone()));
        }
        if !self.entries.contains_key(&seq) {
            return Ok(None);
        }
        let path = self.path_of(seq);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(seq, "snapshot {} vanished from the spool", path.display());
                self.forget(seq);
                return Ok(None);
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {} from the spool", path.display())),
        };
        match decode(&bytes) {
            Ok(snapshot) => Ok(Some(Arc::new(snapshot))),
            Err(e) => {
                self.set_aside(seq, &format!("{e:#}"));
                Ok(None)
            }
        }
    }

    /// Moves the file of `seq` into [`CORRUPT_DIR`] (it cannot be read back as a
    /// snapshot: sending it again would fail again, forever), logs that once with its
    /// name and why, and counts it as dropped, so the collector hears of the hole.
    pub fn set_aside(&mut self, seq: u64, why: &str) {
        if self.entries.contains_key(&seq) {
            self.set_aside_file(seq, why);
            self.forget(seq);
            self.dropped += 1;
            self.state_saved = false;
            if let Err(e) = self.save_state() {
                tracing::warn!("cannot update the spool's state file: {e:#}");
            }
        }
    }

    /// Forgets `seq` in memory (its file is gone or moved).
    fn forget(&mut self, seq: u64) {
        self.recent.remove(&seq);
        self.unwritten.remove(&seq);
        if let Some(entry) = self.entries.remove(&seq) {
            self.bytes -= entry.bytes;
        }
    }

    /// Moves the file of `seq` into [`CORRUPT_DIR`], keeping the newest [`CORRUPT_KEPT`]
    /// there; removes it if it cannot be moved. Logs what happened.
    fn set_aside_file(&self, seq: u64, why: &str) {
        let path = self.path_of(seq);
        let corrupt = self.dir.join(CORRUPT_DIR);
        let Some(name) = path.file_name() else { return };
        let moved = create_private_dir(&corrupt).and_then(|()| fs::rename(&path, corrupt.join(name)));
        match moved {
            Ok(()) => {
                tracing::warn!(
                    seq,
                    "set aside the unreadable spooled snapshot {} ({why}): moved to {}; going on with the next",
                    path.display(),
                    corrupt.display()
                );
                prune_corrupt(&corrupt);
            }
            Err(e) => {
                tracing::warn!(
                    seq,
                    "dropping the unreadable spooled snapshot {} ({why}); it could not be moved aside: {e}",
                    path.display()
                );
                let _ = remove_file_if_exists(&path);
            }
        }
    }

    fn store(&mut self, snapshot: &Snapshot) -> anyhow::Result<u64> {
        let seq = snapshot.seq;
        if seq <= self.last_seq {
            bail!("snapshot seq {seq} is not above the spool's last seq {}", self.last_seq);
        }
        let bytes = encode(snapshot)?;
        let taken_at = SystemTime::from(snapshot.taken_at);
        let written = self.write_making_room(seq, &bytes, taken_at)?;
        self.last_seq = seq;
        let mut dropped = 0;
        if written {
            self.entries.insert(seq, Entry { bytes: bytes.len() as u64, taken_at });
            self.bytes += bytes.len() as u64;
            dropped += self.enforce_limits(crate::clock::system_now());
        } else {
            // Its seq was given out all the same: the collector sees a hole, reported.
            tracing::warn!(seq, "the spool disk is full and holds no older snapshot to drop: dropped the new one");
            self.dropped += 1;
            dropped += 1;
        }
        // The snapshot is stored; a state file that cannot be written now is retried by
        // the next change, and until then the highest file name stands in for it. Saving
        // the state syncs the directory, which makes the snapshot's rename durable too.
        self.state_saved = false;
        if let Err(e) = self.save_state() {
            tracing::warn!("cannot update the spool's state file: {e:#}");
            sync_dir(&self.dir).with_context(|| format!("cannot flush the spool directory {}", self.dir.display()))?;
        }
        Ok(dropped)
    }

    /// Writes the file of `seq`. When the disk is full, drops the oldest snapshots on
    /// disk one at a time until it fits, counting them as the limits do: a full disk is
    /// one more limit, and the newest snapshots are worth more than the oldest. Returns
    /// false if it does not fit with every other snapshot gone (or none was there).
    fn write_making_room(&mut self, seq: u64, bytes: &[u8], taken_at: SystemTime) -> anyhow::Result<bool> {
        let path = self.path_of(seq);
        let mut dropped = 0u64;
        let written = loop {
            match write_atomically(&path, bytes, Some(taken_at)) {
                Ok(()) => break true,
                Err(e) if is_disk_full(&e) => {
                    let on_disk = self.entries.keys().copied().find(|s| *s != seq && !self.unwritten.contains(s));
                    let Some(oldest) = on_disk else { break false };
                    self.drop_entry(oldest);
                    dropped += 1;
                }
                Err(e) => return Err(e).with_context(|| format!("cannot write {} to the spool", path.display())),
            }
        };
        if dropped > 0 {
            tracing::warn!(dropped, dir = %self.dir.display(), "the spool disk is full: dropped the oldest snapshots");
            self.dropped += dropped;
            self.state_saved = false;
        }
        Ok(written)
    }

    /// Seqs waiting, oldest first.
    pub fn pending(&self) -> Vec<u64> {
        self.entries.keys().copied().collect()
    }

    /// The stored bytes of one seq, as a keyframe carries them. An error if `seq` is not in
    /// the spool (never pushed, removed, or dropped by the limits).
    pub fn read(&self, seq: u64) -> anyhow::Result<Vec<u8>> {
        if !self.entries.contains_key(&seq) {
            bail!("snapshot {seq} is not in the spool");
        }
        if self.unwritten.contains(&seq)
            && let Some(snapshot) = self.recent.get(&seq)
        {
            // Held in memory only: the same bytes its file would hold.
            return encode(snapshot);
        }
        let path = self.path_of(seq);
        fs::read(&path).with_context(|| format!("cannot read {} from the spool", path.display()))
    }

    /// Removes `seq` (acknowledged or rejected by the collector). Removing a seq that is
    /// not there is not an error: an acknowledgement may arrive twice.
    pub fn remove(&mut self, seq: u64) -> anyhow::Result<()> {
        self.recent.remove(&seq);
        if self.unwritten.remove(&seq) {
            // Never written: nothing on disk to change.
            self.entries.remove(&seq);
            return Ok(());
        }
        let removed = match self.entries.remove(&seq) {
            Some(entry) => {
                self.bytes -= entry.bytes;
                remove_file_if_exists(&self.path_of(seq))
            }
            None => Ok(()),
        };
        if !self.state_saved && !self.live {
            self.save_state()?;
        }
        // Forgotten either way: a file that could not be removed is sent again after a
        // restart, and the collector stores it once.
        removed.with_context(|| format!("cannot remove snapshot {seq} from the spool"))
    }

    /// Snapshots dropped (by the limits, or damaged) since the last call, to report
    /// them; resets the count. Unreported drops survive a restart.
    pub fn take_dropped(&mut self) -> u64 {
        let dropped = std::mem::take(&mut self.dropped);
        if dropped > 0 {
            self.state_saved = false;
            if let Err(e) = self.save_state() {
                tracing::warn!("cannot update the spool's state file: {e:#}");
            }
        }
        dropped
    }

    /// Bytes used by the stored snapshots.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn path_of(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:0width$}{SNAPSHOT_SUFFIX}", width = SEQ_DIGITS))
    }

    /// Drops every snapshot older than `max_age`, then the oldest while the total is
    /// over `max_bytes`. Returns how many it dropped (also added to `dropped`).
    fn enforce_limits(&mut self, now: SystemTime) -> u64 {
        let max_age = self.limits.max_age;
        // All of them, not only from the front: after the clock was set back, an older
        // snapshot may carry a higher seq.
        let too_old: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, entry)| now.duration_since(entry.taken_at).is_ok_and(|age| age > max_age))
            .map(|(&seq, _)| seq)
            .collect();
        let mut dropped = too_old.len() as u64;
        for seq in too_old {
            self.drop_entry(seq);
        }
        while self.bytes > self.limits.max_bytes {
            let Some(&seq) = self.entries.keys().next() else { break };
            self.drop_entry(seq);
            dropped += 1;
        }
        if dropped > 0 {
            let (max_bytes, max_age) = (self.limits.max_bytes, procyon::duration::format(max_age));
            tracing::warn!(dropped, max_bytes, %max_age, "spool limit reached: dropped the oldest snapshots");
            self.dropped += dropped;
        }
        dropped
    }

    fn drop_entry(&mut self, seq: u64) {
        self.recent.remove(&seq);
        self.unwritten.remove(&seq);
        if let Some(entry) = self.entries.remove(&seq) {
            self.bytes -= entry.bytes;
            if let Err(e) = remove_file_if_exists(&self.path_of(seq)) {
                tracing::warn!(seq, "cannot remove a dropped snapshot from the spool: {e}");
            }
        }
    }

    fn save_state(&mut self) -> anyhow::Result<()> {
        let state = State {
            last_seq: self.last_seq,
            unreported_dropped: self.dropped,
            provisional_from: self.provisional_from,
        };
        let json = serde_json::to_vec(&state)?;
        let path = self.dir.join(state_name(self.last_seq));
        write_atomically(&path, &json, None).with_context(|| format!("cannot write {}", path.display()))?;
        // The new file is complete: the older ones may go (one left behind by a crash is
        // removed next time; the highest seq wins on reading anyway).
        for old in std::mem::take(&mut self.state_files).into_iter().filter(|old| *old != path) {
            if let Err(e) = remove_file_if_exists(&old) {
                tracing::warn!("cannot remove the old spool state file {}: {e}", old.display());
            }
        }
        self.state_files.push(path);
        sync_dir(&self.dir).with_context(|| format!("cannot flush the spool directory {}", self.dir.display()))?;
        self.state_saved = true;
        self.saved_seq = self.last_seq;
        Ok(())
    }
}

/// A snapshot as the spool stores it (and a keyframe carries it after its kind byte):
/// zstd of its JSON. The one definition is the library's, shared with the collector.
pub fn encode(snapshot: &Snapshot) -> anyhow::Result<Vec<u8>> {
    procyon::model::agent::encode_snapshot(snapshot).context("cannot encode a snapshot")
}

/// Reads [`encode`]'s bytes back, refusing to expand past 64 MiB (a damaged or hostile
/// file cannot exhaust memory).
pub fn decode(bytes: &[u8]) -> anyhow::Result<Snapshot> {
    procyon::model::agent::decode_snapshot(bytes).map_err(anyhow::Error::msg)
}

/// The seq in a snapshot file's name.
fn seq_of(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SNAPSHOT_SUFFIX)?;
    if digits.len() != SEQ_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A temporary file this module writes (and no one else's).
fn is_own_temp_file(name: &str) -> bool {
    name.strip_suffix(TMP_SUFFIX).is_some_and(|base| is_state_file(base) || seq_of(base).is_some() || base == LIVE_FILE)
}

/// The state file's name when `last_seq` is the highest seq given out.
fn state_name(last_seq: u64) -> String {
    format!("{STATE_PREFIX}{last_seq:0width$}{STATE_SUFFIX}", width = SEQ_DIGITS)
}

/// A state file's name, of either form.
fn is_state_file(name: &str) -> bool {
    name == STATE_FILE
        || name
            .strip_prefix(STATE_PREFIX)
            .and_then(|rest| rest.strip_suffix(STATE_SUFFIX))
            .is_some_and(|digits| digits.len() == SEQ_DIGITS && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// Checks that a snapshot file holds one complete zstd frame, without decompressing it
/// (cheap even for a full spool); returns its size and time.
fn check_file(path: &Path) -> Result<Entry, String> {
    let meta = fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    match zstd::zstd_safe::find_frame_compressed_size(&bytes) {
        Ok(frame) if frame == bytes.len() && frame > 0 => {}
        Ok(_) => return Err("not a single zstd frame".into()),
        Err(_) => return Err(format!("not a complete zstd frame ({} bytes)", bytes.len())),
    }
    let taken_at = meta.modified().unwrap_or_else(|_| SystemTime::now());
    Ok(Entry { bytes: bytes.len() as u64, taken_at })
}

/// The state with the highest seq among the state files, whether every one of them was
/// read as it is, and their paths. None is a new spool; a damaged one is replaced (the
/// seqs of the snapshot files present still count).
fn read_state(dir: &Path) -> (State, bool, Vec<PathBuf>) {
    let mut files = Vec::new();
    let mut best: Option<State> = None;
    let mut all_read = true;
    let names = fs::read_dir(dir).into_iter().flatten().flatten().map(|item| item.file_name());
    for name in names.filter_map(|n| n.into_string().ok()).filter(|n| is_state_file(n)) {
        let path = dir.join(&name);
        let read = fs::read(&path).map_err(|e| e.to_string());
        match read.and_then(|bytes| serde_json::from_slice::<State>(&bytes).map_err(|e| e.to_string())) {
            Ok(state) => {
                if best.as_ref().is_none_or(|b| state.last_seq > b.last_seq) {
                    best = Some(state);
                }
            }
            Err(e) => {
                tracing::warn!("ignoring the damaged spool state file {}: {e}", path.display());
                all_read = false;
            }
        }
        files.push(path);
    }
    let ok = all_read && best.is_some();
    (best.unwrap_or_default(), ok, files)
}

/// Writes `path` through `path.tmp`, an fsync and a rename, so readers (and a restart
/// after a crash or a power cut) see the old content or the new, never a part. Mode
/// 0600; the mtime is set to `mtime` if given. The rename itself is durable only once
/// the directory is synced ([`sync_dir`]).
fn write_atomically(path: &Path, bytes: &[u8], mtime: Option<SystemTime>) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(TMP_SUFFIX);
    let tmp = PathBuf::from(tmp);
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = options.open(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        if let Some(mtime) = mtime {
            // Best effort: without it the age counts from the write, a few ms later.
            let _ = file.set_modified(mtime);
        }
        file.sync_all()
    });
    let result = result.and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes the renames and removals in `dir` durable (fsync of the directory itself).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)?.sync_all()
    }
    // Windows cannot open a directory as a file; NTFS journals renames itself.
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Removes the oldest (lowest seq) files of the set-aside directory beyond
/// [`CORRUPT_KEPT`].
fn prune_corrupt(corrupt: &Path) {
    let mut names: Vec<_> =
        fs::read_dir(corrupt).into_iter().flatten().flatten().map(|item| item.file_name()).collect();
    names.sort();
    let extra = names.len().saturating_sub(CORRUPT_KEPT);
    for name in &names[..extra] {
        let _ = remove_file_if_exists(&corrupt.join(name));
    }
}

/// The disk (or the user's quota on it) has no room left.
fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
}

fn remove_file_if_exists(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Creates `dir` and missing parents with mode 0700. An existing directory is left as it
/// is: it may be one the user chose and shares on purpose.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn warn_if_shared(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(dir) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "the spool directory {} is open to other users (mode {mode:04o}); \
                     the process lists in it are not theirs to read: chmod 700 it",
                    dir.display()
                );
            }
        }
    }
}

/// Takes the spool's lock, or says who holds it.
#[cfg(unix)]
fn lock(dir: &Path) -> anyhow::Result<nix::fcntl::Flock<fs::File>> {
    use nix::fcntl::{Flock, FlockArg};
    let path = dir.join(LOCK_FILE);
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => bail!(
            "another procyon-agent is using the spool {}; give each agent its own with --spool DIR",
            dir.display()
        ),
        Err((_, errno)) => bail!("cannot lock {}: {errno}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use chrono::{DateTime, TimeDelta, Utc};
    use procyon::sample::Sampler;

    use super::*;

    /// One real snapshot of this machine, taken once (sampling waits for CPU figures);
    /// real, so the tests follow the model as it grows.
    fn base() -> &'static Snapshot {
        static BASE: OnceLock<Snapshot> = OnceLock::new();
        BASE.get_or_init(|| Sampler::new(Default::default()).sample())
    }

    fn snap(seq: u64, taken_at: DateTime<Utc>) -> Snapshot {
        let mut s = base().clone();
        s.seq = seq;
        s.taken_at = taken_at;
        s
    }

    fn now() -> DateTime<Utc> {
        Utc::now()
    }

    const ROOMY: Limits = Limits { max_bytes: 1 << 30, max_age: Duration::from_secs(86400) };

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    #[test]
    fn push_pending_read_remove_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), ROOMY).unwrap();
        assert_eq!((spool.last_seq(), spool.pending(), spool.bytes()), (0, vec![], 0));
        let t = now();
        for seq in 1..=3 {
            assert_eq!(spool.push(&snap(seq, t)).unwrap(), 0);
        }
        assert_eq!(spool.pending(), [1, 2, 3]);
        assert_eq!(spool.last_seq(), 3);
        let bytes = spool.read(2).unwrap();
        assert_eq!(bytes, encode(&snap(2, t)).unwrap(), "stored as they go on the wire");
        let back = decode(&bytes).unwrap();
        assert_eq!((back.seq, back.processes.len()), (2, base().processes.len()));
        let sizes: u64 = [1, 2, 3].iter().map(|&s| spool.read(s).unwrap().len() as u64).sum();
        assert_eq!(spool.bytes(), sizes);

        spool.remove(2).unwrap();
        spool.remove(2).unwrap(); // a second acknowledgement
        assert_eq!(spool.pending(), [1, 3]);
        assert!(spool.read(2).is_err());
        assert_eq!(spool.bytes(), sizes - bytes.len() as u64);
        assert_eq!(
            names(dir.path()),
            ["00000000000000000001.zst", "00000000000000000003.zst", "lock", "state-00000000000000000003.json"]
        );
        assert_eq!(spool.take_dropped(), 0);
    }

    #[test]
    fn a_seq_must_increase() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), ROOMY).unwrap();
        spool.push(&snap(5, now())).unwrap();
        let err = spool.push(&snap(5, now())).unwrap_err().to_string();
        assert_eq!(err, "snapshot seq 5 is not above the spool's last seq 5");
        assert!(spool.push(&snap(4, now())).is_err());
        spool.bump_seq(3).unwrap();
        assert_eq!(spool.last_seq(), 5, "bump_seq never lowers it");
        spool.bump_seq(40).unwrap();
        assert!(spool.push(&snap(40, now())).is_err());
        spool.push(&snap(41, now())).unwrap();
        assert_eq!(spool.pending(), [5, 41]);
    }

    #[test]
    fn reopening_keeps_what_is_pending_and_the_seq() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), ROOMY).unwrap();
        for seq in 1..=4 {
            spool.push(&snap(seq, now())).unwrap();
        }
        spool.remove(1).unwrap();
        spool.remove(3).unwrap();
        let bytes = spool.bytes();
        drop(spool);

        let mut spool = Spool::open(dir.path(), ROOMY).unwrap();
        assert_eq!(spool.pending(), [2, 4]);
        assert_eq!(spool.last_seq(), 4);
        assert_eq!(spool.bytes(), bytes);
        assert_eq!(decode(&spool.read(4).unwrap()).unwrap().seq, 4);
        assert_eq!(spool.take_dropped(), 0);
        spool.push(&snap(5, now())).unwrap();
        assert_eq!(spool.pending(), [2, 4, 5]);
    }

    #[test]
    fn the_seq_continues_after_reopening_an_empty_spool() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), ROOMY).unwrap();
        for seq in 1..=3 {
            spool.push(&snap(seq, now())).unwrap();
            spool.remove(seq).unwrap();
        }
        drop(spool);
        let mut spool = Spool::open(dir.path(), ROOMY).unwrap();
        assert_eq!((spool.pending(), spool.last_seq()), (vec![], 3));
        spool.bump_seq(10).unwrap();
        drop(spool);
        let spool = Spool::open(dir.path(), ROOMY).unwrap();
        assert_eq!(spool.last_seq(), 10, "a bumped seq is kept too");
    }

    #[test]
    fn the_byte_limit_drops_the_oldest_first_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let t = now();
        let sizes: Vec<u64> = (1..=5).map(|s| encode(&snap(s, t)).unwrap().len() as u64).collect();
        let smallest = sizes.iter().copied().min().unwrap();
        // Room for the three newest and half of another.
        let max_bytes = sizes[2] + sizes[3] + sizes[4] + smallest / 2;
        let mut spool = Spool::open(dir.path(), Limits { max_bytes, ..ROOMY }).unwrap();
        let dropped: Vec<u64> = (1..=5).map(|s| spool.push(&snap(s, t)).unwrap()).collect();
        assert_eq!(dropped, [0, 0, 0, 1, 1]);
        assert_eq!(spool.pending(), [3, 4, 5]);
        assert_eq!(spool.bytes(), sizes[2] + sizes[3] + sizes[4]);
        assert!(spool.bytes() <= max_bytes);
        assert_eq!(names(dir.path()).iter().filter(|n| n.ends_with(".zst")).count(), 3);

        // Unreported drops survive a restart, and are reported once.
        drop(spool);
        let mut spool = Spool::open(dir.path(), Limits { max_bytes, ..ROOMY }).unwrap();
        assert_eq!(spool.take_dropped(), 2);
        assert_eq!(spool.take_dropped(), 0);

        // A tighter limit on reopening applies at once.
        drop(spool);
        let mut spool = Spool::open(dir.path(), Limits { max_bytes: sizes[4], ..ROOMY }).unwrap();
        assert_eq!(spool.pending(), [5]);
        assert_eq!(spool.take_dropped(), 2);
    }

    #[test]
    fn the_age_limit_drops_old_snapshots_even_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let hours = |h: i64| now() - TimeDelta::minutes(h * 60);
        let mut spool = Spool::open(dir.path(), ROOMY).unwrap();
        spool.push(&snap(1, hours(3))).unwrap();
        spool.push(&snap(2, hours(2))).unwrap();
        spool.push(&snap(3, hours(0))).unwrap();
        assert_eq!(spool.pending(), [1, 2, 3]);
        drop(spool);

        // The age comes from the file's mtime, set to the snapshot's taken_at.
        let limits = Limits { max_age: Duration::from_secs(150 * 60), ..ROOMY };
        let mut spool = Spool::open(dir.path(), limits).unwrap();
        assert_eq!(spool.pending(), [2, 3]);
        assert_eq!(spool.take_dropped(), 1);

        // A snapshot already too old when pushed goes at once, whatever its seq.
        assert_eq!(spool.push(&snap(4, hours(5))).unwrap(), 1);
        assert_eq!(spool.push(&snap(5, hours(0))).unwrap(), 0);
        assert_eq!(spool.pending(), [2, 3, 5]);
        let limits = Limits { max_age: Duration::from_secs(60 * 60), ..ROOMY };
        drop(spool);
        let mut spool = Spool::open(dir.path(), limits).unwrap();
        assert_eq!(spool.pending(), [3, 5], "2 is older than an hour");
        assert_eq!(spool.take_dropped(), 2, "4 when pushed, 2 when reopened");
    }

    #[test]
    fn temporary_and_damaged_files_are_cleaned_up_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), ROOMY).unwrap();
        spool.push(&snap(1, now())).unwrap();
        spool.push(&snap(2, now())).unwrap();
        let whole = spool.read(2).unwrap();
        drop(spool);
        let path = |name: &str| dir.path().join(name);
        // A crash in the middle of writes leaves temporary files...
        fs::write(path("00000000000000000003.zst.tmp"), &whole[..10]).unwrap();
        fs::write(path("state-00000000000000000003.json.tmp"), "{\"last_").unwrap();
        fs::write(path("state.json.tmp"), "{\"last_").unwrap();
        // ...a power loss may leave a file cut short, or empty.
        fs::write(path("00000000000000000002.zst"), &whole[..whole.len() / 2]).unwrap();
        fs::write(path("00000000000000000007.zst"), b"").unwrap();
        // Files that are not the spool's are left alone.
        fs::write(path("api.key"), "k").unwrap();
        fs::write(path("notes.tmp"), "mine").unwrap();

        let mut spool = Spool::open(dir.path(), ROOMY).unwrap();
        assert_eq!(spool.pending(), [1]);
        assert_eq!(spool.take_dropped(), 2);
        assert_eq!(spool.last_seq(), 7, "the seq of a damaged file was given out all the same");
        assert_eq!(
            names(dir.path()),
            ["00000000000000000001.zst", "api.key", "corrupt", "lock", "notes.tmp", "state-00000000000000000007.json"]
        );
        // The damaged ones are set aside, not deleted.
        assert_eq!(names(&dir.path().join(CORRUPT_DIR)), ["00000000000000000002.zst", "00000000000000000007.zst"]);
    }

    #[test]
    fn an_unreadable_snapshot_is_set_aside_and_the_rest_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), ROOMY).unwrap();
        for seq in 1..=4 {
            spool.push(&snap(seq, now())).unwrap();
        }
        // A whole zstd frame that is not a snapshot passes the check on opening; it
        // fails only when decoded for sending, and used to be retried forever.
        let garbage = zstd::bulk::compress(b"{\"not\": \"a snapshot\"}", 1).unwrap();
        for (seq, bytes) in [(2u64, &garbage[..]), (3, &b"\x28\xb5\x2f\xfd garbage"[..])] {
            // The same size as before, so the accounting does not depend on it.
            fs::write(spool.path_of(seq), bytes).unwrap();
        }
        spool.recent.clear(); // as after a restart: read from the disk
        assert!(spool.snapshot(2).unwrap().is_none());
        assert!(spool.snapshot(3).unwrap().is_none());
        assert_eq!(spool.pending(), [1, 4], "the others are still there");
        assert_eq!(spool.snapshot(1).unwrap().unwrap().seq, 1);
        assert_eq!(spool.snapshot(4).unwrap().unwrap().seq, 4);
        assert!(spool.snapshot(2).unwrap().is_none(), "asked again: still gone, no error");
        assert_eq!(spool.bytes(), [1, 4].iter().map(|&s| spool.read(s).unwrap().len() as u64).sum::<u64>());
        assert_eq!(names(&dir.path().join(CORRUPT_DIR)), ["00000000000000000002.zst", "00000000000000000003.zst"]);
        assert_eq!(fs::read(dir.path().join(CORRUPT_DIR).join("00000000000000000002.zst")).unwrap(), garbage);
        drop(spool);

        // The state survives: the same seq, the same pending ones, the holes reported.
        let mut spool = Spool::open(dir.path(), ROOMY).unwrap();
        assert_eq!((spool.last_seq(), spool.pending()), (4, vec![1, 4]));
        assert_eq!(spool.take_dropped(), 2);
    }

    #[test]
    fn only_the_newest_set_aside_files_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), ROOMY).unwrap();
        let total = CORRUPT_KEPT as u64 + 3;
        for seq in 1..=total {
            spool.push(&snap(seq, now())).unwrap();
            spool.set_aside(seq, "test");
        }
        let kept = names(&dir.path().join(CORRUPT_DIR));
        let expected: Vec<String> = (4..=total).map(|seq| format!("{seq:020}.zst")).collect();
        assert_eq!(kept, expected);
        assert!(spool.pending().is_empty());
        assert_eq!(spool.take_dropped(), total);
    }

    #[test]
    fn a_damaged_state_file_falls_back_to_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), ROOMY).unwrap();
        spool.push(&snap(6, now())).unwrap();
        drop(spool);
        fs::write(dir.path().join("state-00000000000000000006.json"), "garbage").unwrap();
        let spool = Spool::open(dir.path(), ROOMY).unwrap();
        assert_eq!((spool.last_seq(), spool.pending()), (6, vec![6]));
        drop(spool);
        // A state file of the older name is read too; the highest seq wins, and only
        // the current file is kept.
        fs::write(dir.path().join("state.json"), "{\"last_seq\": 9}").unwrap();
        let spool = Spool::open(dir.path(), ROOMY).unwrap();
        assert_eq!(spool.last_seq(), 9);
        assert_eq!(names(dir.path()), ["00000000000000000006.zst", "lock", "state-00000000000000000009.json"]);
    }

    #[cfg(unix)]
    #[test]
    fn two_agents_cannot_share_a_spool() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), ROOMY).unwrap();
        let err = Spool::open(dir.path(), ROOMY).unwrap_err().to_string();
        assert!(err.starts_with("another procyon-agent is using the spool"), "{err}");
        drop(spool);
        Spool::open(dir.path(), ROOMY).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn the_directory_is_created_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("a/spool");
        let mut spool = Spool::open(&spool_dir, ROOMY).unwrap();
        assert_eq!(fs::metadata(&spool_dir).unwrap().permissions().mode() & 0o777, 0o700);
        spool.push(&snap(1, now())).unwrap();
        let file = spool_dir.join("00000000000000000001.zst");
        assert_eq!(fs::metadata(file).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn decode_refuses_what_is_not_a_snapshot() {
        assert!(decode(b"not zstd").is_err());
        assert!(decode(&zstd::bulk::compress(b"{\"a\":1}", 3).unwrap()).is_err());
        let bomb = zstd::bulk::compress(&vec![b' '; (64 << 20) + 10], 1).unwrap();
        assert!(decode(&bomb).unwrap_err().to_string().contains("64 MiB"));
    }

    fn zst(seq: u64) -> String {
        format!("{seq:020}.zst")
    }

    #[test]
    fn while_live_an_acknowledged_snapshot_never_touches_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), ROOMY).unwrap();
        spool.push(&snap(1, now())).unwrap();
        spool.remove(1).unwrap();
        spool.set_live(true).unwrap();
        let live = names(dir.path());
        assert_eq!(live, ["live", "lock", "state-00000000000000000001.json"]);
        for seq in 2..=4 {
            spool.push(&snap(seq, now())).unwrap();
            assert_eq!((spool.pending(), spool.last_seq()), (vec![seq], seq));
            // A keyframe of it (a resync) still has its bytes.
            assert_eq!(decode(&spool.read(seq).unwrap()).unwrap().seq, seq);
            assert_eq!(spool.snapshot(seq).unwrap().unwrap().seq, seq);
            assert_eq!(names(dir.path()), live, "nothing written for {seq}");
            spool.remove(seq).unwrap();
            assert_eq!(names(dir.path()), live, "nothing written or removed for its ack");
        }
        // Not acknowledged by the time the next is pushed: written then.
        spool.push(&snap(5, now())).unwrap();
        spool.push(&snap(6, now())).unwrap();
        let files = names(dir.path());
        assert!(files.contains(&zst(5)) && !files.contains(&zst(6)), "{files:?}");
        assert_eq!(spool.bytes(), fs::metadata(dir.path().join(zst(5))).unwrap().len());
        assert_eq!(spool.pending(), [5, 6]);
        // The session ends: what is held is written, and the state file.
        spool.set_live(false).unwrap();
        assert_eq!(names(dir.path()), [zst(5), zst(6), "lock".into(), "state-00000000000000000006.json".into()]);
        drop(spool);
        let spool = Spool::open(dir.path(), ROOMY).unwrap();
        assert_eq!((spool.last_seq(), spool.pending(), spool.provisional_from()), (6, vec![5, 6], None));
    }

    #[test]
    fn after_a_crash_while_live_the_next_seqs_are_provisional() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), ROOMY).unwrap();
        spool.push(&snap(1, now())).unwrap();
        spool.set_live(true).unwrap();
        for seq in 2..=4 {
            spool.push(&snap(seq, now())).unwrap();
            spool.remove(seq).unwrap();
        }
        // Killed before 5 was acknowledged: the live file stays behind.
        spool.push(&snap(5, now())).unwrap();
        drop(spool);
        let mut spool = Spool::open(dir.path(), ROOMY).unwrap();
        assert_eq!((spool.last_seq(), spool.pending()), (1, vec![1]), "2 to 5 were never written");
        assert_eq!(spool.provisional_from(), Some(2), "the collector may hold 2 to 4");
        assert!(!names(dir.path()).contains(&"live".to_owned()));
        // Still provisional after another restart before any collector was met.
        spool.push(&snap(2, now())).unwrap();
        drop(spool);
        let mut spool = Spool::open(dir.path(), ROOMY).unwrap();
        assert_eq!((spool.provisional_from(), spool.pending()), (Some(2), vec![1, 2]));
        spool.clear_provisional().unwrap();
        drop(spool);
        assert_eq!(Spool::open(dir.path(), ROOMY).unwrap().provisional_from(), None);
    }

    #[test]
    fn a_long_live_session_keeps_the_state_file_close_behind() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), ROOMY).unwrap();
        spool.set_live(true).unwrap();
        let last = 2 * LIVE_STATE_EVERY + 5;
        for seq in 1..=last {
            spool.push(&snap(seq, now())).unwrap();
            spool.remove(seq).unwrap();
        }
        drop(spool);
        let spool = Spool::open(dir.path(), ROOMY).unwrap();
        let behind = last - (spool.provisional_from().unwrap() - 1);
        assert!(behind <= LIVE_STATE_EVERY + 1, "{behind} behind");
        assert_eq!(spool.last_seq() + 1, spool.provisional_from().unwrap());
    }
}
