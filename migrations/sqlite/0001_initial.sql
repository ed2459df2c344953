-- The collector's first schema: hosts, snapshots, rollups, users, API keys, audit log.
--
-- Times are unix milliseconds (UTC) in INTEGER columns: compact, and ordered the same
-- way as the times themselves.
--
-- `auto_vacuum = INCREMENTAL` is set by the store when it opens the file (a connection
-- option), not here: it only takes effect before the first table is created, and sqlx
-- creates its own `_sqlx_migrations` table before it runs this file.

-- One row per monitored machine, keyed by host name.
CREATE TABLE hosts (
    id              INTEGER PRIMARY KEY,
    hostname        TEXT    NOT NULL UNIQUE,
    -- HostInfo of the newest snapshot, as JSON.
    info_json       TEXT,
    first_seen      INTEGER NOT NULL,
    last_seen       INTEGER NOT NULL,
    -- taken_at of the newest snapshot: `info_json` is replaced only by a newer one.
    last_taken_at   INTEGER NOT NULL,
    last_seq        INTEGER NOT NULL DEFAULT 0,
    -- Stored raw snapshots, kept by the triggers below so lists never count rows.
    snapshot_count  INTEGER NOT NULL DEFAULT 0
);

-- Full snapshots. The summary columns serve lists and charts without opening `body`.
CREATE TABLE snapshots (
    id                      INTEGER PRIMARY KEY,
    host_id                 INTEGER NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    seq                     INTEGER NOT NULL,
    taken_at                INTEGER NOT NULL,
    received_at             INTEGER NOT NULL,
    cpu_percent             REAL    NOT NULL,
    memory_used_bytes       INTEGER NOT NULL,
    memory_total_bytes      INTEGER NOT NULL,
    process_count           INTEGER NOT NULL,
    connection_count        INTEGER NOT NULL,
    sent_bytes_per_sec      REAL    NOT NULL,
    received_bytes_per_sec  REAL    NOT NULL,
    load_one                REAL,
    -- Top processes by CPU and by resident memory (JSON array), read by rollups.
    top_json                TEXT    NOT NULL,
    -- The whole snapshot as zstd-compressed JSON.
    body                    BLOB    NOT NULL,
    UNIQUE (host_id, seq)
);
CREATE INDEX snapshots_host_time ON snapshots (host_id, taken_at, seq);
-- Lists over every host, newest first.
CREATE INDEX snapshots_time ON snapshots (taken_at);

CREATE TRIGGER snapshots_count_insert AFTER INSERT ON snapshots
BEGIN
    UPDATE hosts SET snapshot_count = snapshot_count + 1 WHERE id = NEW.host_id;
END;
CREATE TRIGGER snapshots_count_delete AFTER DELETE ON snapshots
BEGIN
    UPDATE hosts SET snapshot_count = snapshot_count - 1 WHERE id = OLD.host_id;
END;

-- Per-minute and per-hour aggregates. Averages are over `samples` snapshots, so two
-- rows of the same bucket merge exactly (weights = samples).
CREATE TABLE rollups (
    host_id         INTEGER NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    tier            TEXT    NOT NULL CHECK (tier IN ('minute', 'hour')),
    -- Bucket start.
    bucket          INTEGER NOT NULL,
    samples         INTEGER NOT NULL,
    cpu_avg         REAL    NOT NULL,
    cpu_max         REAL    NOT NULL,
    memory_avg      REAL    NOT NULL,
    memory_max      INTEGER NOT NULL,
    processes_avg   REAL    NOT NULL,
    processes_max   INTEGER NOT NULL,
    sent_avg        REAL    NOT NULL,
    sent_max        REAL    NOT NULL,
    received_avg    REAL    NOT NULL,
    received_max    REAL    NOT NULL,
    -- Processes that peaked in the bucket, with the time of each peak (JSON array).
    top_json        TEXT    NOT NULL,
    PRIMARY KEY (host_id, tier, bucket)
);

-- How far each host's tiers are rolled: every bucket that starts before `rolled_until`
-- is in `rollups`. Maintenance resumes from here instead of rereading everything.
CREATE TABLE rollup_progress (
    host_id         INTEGER NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    tier            TEXT    NOT NULL CHECK (tier IN ('minute', 'hour')),
    rolled_until    INTEGER NOT NULL,
    PRIMARY KEY (host_id, tier)
);

-- Snapshots that arrived after their minute was rolled (an agent's spool catching
-- up); maintenance merges them into their rollups and removes them from here.
CREATE TABLE rollup_late (
    snapshot_id     INTEGER PRIMARY KEY REFERENCES snapshots (id) ON DELETE CASCADE
);

CREATE TABLE users (
    id              INTEGER PRIMARY KEY,
    username        TEXT    NOT NULL UNIQUE,
    -- PHC-format hash; the store never sees passwords.
    password_hash   TEXT    NOT NULL,
    role            TEXT    NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    created_at      INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id              INTEGER PRIMARY KEY,
    name            TEXT    NOT NULL,
    prefix          TEXT    NOT NULL,
    -- SHA-256 of the key; the key itself is never stored.
    key_hash        TEXT    NOT NULL UNIQUE,
    hostname        TEXT,
    created_at      INTEGER NOT NULL,
    last_used_at    INTEGER,
    revoked_at      INTEGER
);
-- A label names one live key; revoked keys keep theirs for the record.
CREATE UNIQUE INDEX api_keys_active_name ON api_keys (name) WHERE revoked_at IS NULL;
CREATE INDEX api_keys_prefix ON api_keys (prefix);

-- Every process action attempt. Never updated or deleted by the store.
CREATE TABLE audit_log (
    id              INTEGER PRIMARY KEY,
    at              INTEGER NOT NULL,
    actor           TEXT    NOT NULL,
    hostname        TEXT    NOT NULL,
    pid             INTEGER NOT NULL,
    process_name    TEXT,
    action          TEXT    NOT NULL,
    tree            INTEGER NOT NULL,
    result          TEXT    NOT NULL,
    message         TEXT    NOT NULL
);
CREATE INDEX audit_log_host ON audit_log (hostname, id);
